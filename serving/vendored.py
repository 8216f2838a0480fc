"""Pure-Python packages the artifact carries, so that the SageMaker container installs
nothing at start (an endpoint in a VPC without a route to PyPI starts all the same).

``ecdsa`` (python-ecdsa, MIT) verifies the model's Ed25519 signature in ``model_fn``; it
needs ``six`` (MIT). Both are copied from this environment into ``code/`` with their
licences, and ``code/VENDORED.txt`` names their versions, so a member's security team can
see exactly what runs beside its images. Neither has compiled parts, so the container's
Python (3.12 in SageMaker's PyTorch 2.6 image) runs what this one (3.11) installed.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from pathlib import Path

from fractofl.serving.errors import ArtifactError

VENDORED = ("ecdsa", "six")
LICENCE_PREFIXES = ("LICENSE", "LICENCE", "COPYING")
MANIFEST = "VENDORED.txt"


def vendored_files() -> dict[str, bytes]:
    """The vendored packages' files, by their path under ``code/``: each package's modules
    (without its tests), its licence under ``licenses/`` and the :data:`MANIFEST`."""
    files: dict[str, bytes] = {}
    manifest = []
    for name in VENDORED:
        try:
            module = importlib.import_module(name)
            distribution = importlib.metadata.distribution(name)
        except (ImportError, importlib.metadata.PackageNotFoundError):
            raise ArtifactError(
                f"the artifact carries {name!r}, which is not installed here; reinstall "
                "fractofl (pip install -e .)"
            ) from None
        source = Path(str(module.__file__))
        if source.name == "__init__.py":
            for path in sorted(source.parent.rglob("*.py")):
                if not path.name.startswith("test_"):
                    relative = path.relative_to(source.parent).as_posix()
                    files[f"{name}/{relative}"] = path.read_bytes()
        else:
            files[source.name] = source.read_bytes()
        files[f"licenses/{name}-LICENSE"] = _licence(distribution)
        manifest.append(f"{name}=={distribution.version}")
    files[MANIFEST] = (
        "# Pure-Python packages vendored by fractofl serve package (serving/vendored.py)\n"
        + "\n".join(manifest)
        + "\n"
    ).encode()
    return files


def _licence(distribution: importlib.metadata.Distribution) -> bytes:
    for file in distribution.files or ():
        if Path(str(file)).name.upper().startswith(LICENCE_PREFIXES):
            return Path(str(distribution.locate_file(file))).read_bytes()
    raise ArtifactError(
        f"no licence file in {distribution.metadata['Name']} {distribution.version}; "
        "the artifact must carry it"
    )
