"""Print, one per line, the ``uv pip install`` options that carry this machine's pip
configuration over (``pip config list``: files and ``PIP_*`` variables), so that uv
installs from the same indexes, find-links and constraints as pip would.

Only the settings uv shares with pip are carried: ``index-url``, ``extra-index-url``,
``find-links``, ``constraint`` and ``cert`` (uv's ``--native-tls`` then trusts the system's
certificates). Run by ``scripts/install-python.sh``; argument: the venv's Python.
"""

from __future__ import annotations

import shlex
import subprocess
import sys

# pip's setting -> uv's option; the list settings take several whitespace-separated values
LISTS = {"extra-index-url": "--extra-index-url", "find-links": "--find-links"}
SINGLE = {"index-url": "--index-url", "constraint": "--constraint"}
# The sections that apply to `pip install`, weakest first: a PIP_* variable (":env:") beats
# an [install] section, which beats [global] (pip's documented precedence). `pip config
# list` prints them in an order that differs between pip versions, so it is not used
# (between files, e.g. user and machine-wide, the last one it prints wins).
SECTIONS = ("global", "install", ":env:")


def pip_settings(python: str) -> list[tuple[str, str, str]]:
    """``(section, setting, value)`` from ``pip config list``, sections that do not apply
    to ``pip install`` left out."""
    listed = subprocess.run(
        [python, "-m", "pip", "config", "list"], capture_output=True, text=True, check=True
    ).stdout
    settings = []
    for line in listed.splitlines():
        key, sep, raw = line.partition("=")
        section, _, setting = key.rpartition(".")
        if sep and section in SECTIONS:
            settings.append((section, setting, " ".join(shlex.split(raw))))
    return settings


def uv_options(settings: list[tuple[str, str, str]]) -> list[str]:
    """The uv options for pip's ``settings``."""
    lists: dict[str, list[str]] = {key: [] for key in LISTS}
    single: dict[str, str] = {}
    cert = False
    for _, key, value in sorted(settings, key=lambda s: SECTIONS.index(s[0])):  # stable
        if key in LISTS:
            lists[key] += [v for v in value.split() if v not in lists[key]]
        elif key in SINGLE and value:
            single[key] = value
        elif key == "cert" and value:
            cert = True
    options = [f"{SINGLE[key]}={value}" for key, value in single.items()]
    options += [f"{LISTS[key]}={value}" for key, values in lists.items() for value in values]
    return options + (["--native-tls"] if cert else [])


if __name__ == "__main__":
    print("\n".join(uv_options(pip_settings(sys.argv[1]))))
