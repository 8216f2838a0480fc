"""The code digest of a Flower app bundle: the same for any run's settings, another for
one changed line, an extra file or another component; typos in a digest named."""

from __future__ import annotations

import pytest
from flwr.cli.build import build_fab_from_files

from fractofl.core.trust.app_bundle import (
    BundleError,
    app_pyproject,
    fab_code,
    fab_files,
    fractofl_bundle,
    parse_digest,
)

SIDECAR = b"from fractofl.client.app import app\nSTEP = 1\n"


def _fab(files: dict[str, bytes]) -> bytes:
    return build_fab_from_files(files)[0]  # Flower's own builder, as `flwr run` uses


def _sidecar_pyproject() -> bytes:
    return app_pyproject({"seed": 1}).replace("fractofl.client.app:app", "sidecar:app").encode()


def test_fractofls_own_bundle_has_one_digest_whatever_the_runs_settings() -> None:
    # Execute: two runs' bundles, built by Flower, with different settings
    first = fab_code(_fab({"pyproject.toml": app_pyproject({"seed": 1}).encode()}))
    second = fab_code(_fab({"pyproject.toml": app_pyproject({"seed": 2, "x": "y"}).encode()}))
    # Assert
    assert first == second == fractofl_bundle()
    assert first.code_files == () and first.clientapp == "fractofl.client.app:app"
    assert len(first.digest) == 64


def test_one_changed_line_an_extra_file_or_another_component_changes_the_digest() -> None:
    # Prepare
    pyproject = _sidecar_pyproject()
    base = fab_code(_fab({"pyproject.toml": pyproject, "sidecar.py": SIDECAR}))
    # Execute
    changed = fab_code(
        _fab({"pyproject.toml": pyproject, "sidecar.py": SIDECAR.replace(b"1", b"2")})
    )
    extra = fab_code(
        _fab({"pyproject.toml": pyproject, "sidecar.py": SIDECAR, "helper.py": b"x = 1\n"})
    )
    # Assert
    digests = {base.digest, changed.digest, extra.digest, fractofl_bundle().digest}
    assert len(digests) == 4
    assert base.clientapp == "sidecar:app" and base.code_files == ("sidecar.py",)
    assert extra.code_files == ("helper.py", "sidecar.py")
    assert "ships 2 file(s) of its own: helper.py, sidecar.py" in extra.describe()


def test_a_digest_typo_is_named() -> None:
    digest = fractofl_bundle().digest
    assert parse_digest(f"  {digest.upper()} ") == digest
    with pytest.raises(BundleError, match="63 characters long; a code digest is 64"):
        parse_digest(digest[:-1])
    with pytest.raises(BundleError, match="'g', which is not a hex digit"):
        parse_digest("g" + digest[1:])


def test_what_is_not_a_bundle_is_refused_by_name() -> None:
    with pytest.raises(BundleError, match="not a zip file"):
        fab_files(b"#!/bin/sh\nrm -rf /\n")
    with pytest.raises(BundleError, match=r"no pyproject\.toml"):
        fab_code(_zip_without_pyproject())


def _zip_without_pyproject() -> bytes:
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("client.py", "print('hi')\n")
    return buffer.getvalue()


def test_a_bundle_that_unpacks_past_the_bound_is_refused_unread() -> None:
    # Prepare: the worst legal-looking bundle, a zip of zeros just past the bound
    import io
    import zipfile

    from fractofl.core.trust.app_bundle import MAX_BUNDLE_BYTES

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("pyproject.toml", app_pyproject({}))
        archive.writestr("zeros.bin", bytes(MAX_BUNDLE_BYTES))
    # Execute / Assert: a few hundred kilobytes on the wire, refused before decompressing
    assert len(buffer.getvalue()) < MAX_BUNDLE_BYTES // 100
    with pytest.raises(BundleError, match="unpacks to more than"):
        fab_files(buffer.getvalue())
