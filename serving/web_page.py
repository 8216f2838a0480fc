"""The members' web page that the local endpoint serves at ``/``: files and headers.

The page is three static files shipped inside the package (``fractofl.serving.web``),
read once at start; it loads nothing from elsewhere (a Content-Security-Policy of
``'self'`` makes the browser enforce that), so it works on a network without internet.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

PAGE_PATH = "/"
ASSET_PREFIX = "/web/"
INDEX = "index.html"
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
}
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data: blob:; form-action 'none'; base-uri 'none'; "
        "frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


@dataclass(frozen=True)
class WebAsset:
    """One file of the page and its content type."""

    body: bytes
    content_type: str


def load_web_assets() -> dict[str, WebAsset]:
    """The page's files by URL path (``/`` for the page itself)."""
    folder = resources.files("fractofl.serving.web")
    assets: dict[str, WebAsset] = {}
    for entry in folder.iterdir():
        suffix = "." + entry.name.rpartition(".")[2]
        if entry.is_file() and suffix in _TYPES:
            path = PAGE_PATH if entry.name == INDEX else ASSET_PREFIX + entry.name
            assets[path] = WebAsset(entry.read_bytes(), _TYPES[suffix])
    if PAGE_PATH not in assets:
        raise FileNotFoundError(
            f"the web page's {INDEX} is missing from {folder}; reinstall fractofl"
        )
    return assets
