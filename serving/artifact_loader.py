"""Run an extracted artifact's own ``code/inference.py``, as the SageMaker container does.

The artifact's vendored fractofl modules must be byte-identical to the fractofl running
here (in one process there is only one ``fractofl.core.model.architectures``), so what is served is
exactly what SageMaker would serve.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fractofl.serving.errors import ArtifactError
from fractofl.serving.package import CODE_DIR, INFERENCE_FILE

MODULE_NAME = "fractofl_served_inference"


@dataclass(frozen=True)
class InferenceHandlers:
    """The loaded model and the artifact's per-request functions: ``transform_fn(model,
    body, content_type, accept)``, which raises a request's error with its
    ``status_code``, and ``transform_batch(model, [(body, content_type, accept), ...])``,
    which answers several with one forward (an answer or the error per request)."""

    model: Any
    transform_fn: Callable[[Any, bytes, str, str | None], tuple[bytes, str]]
    transform_batch: Callable[[Any, list[tuple[bytes, str, str | None]]], list[Any]]
    version: str


def load_handlers(model_dir: Path) -> InferenceHandlers:
    """Import ``model_dir/code/inference.py`` and call its ``model_fn(model_dir)``.

    Raises
    ------
    ArtifactError
        If the vendored code differs from the running fractofl, or the model fails to
        load (missing or altered files, a signature that does not verify).
    """
    code = model_dir / CODE_DIR
    check_vendored_code(code)
    module = _import_file(code / INFERENCE_FILE)
    try:
        model = module.model_fn(str(model_dir))
    except Exception as exc:
        raise ArtifactError(f"the model in {model_dir} failed to load: {exc}") from exc
    return InferenceHandlers(model, module.transform_fn, module.transform_batch, str(model.version))


def check_vendored_code(code: Path) -> None:
    """Fail unless every vendored ``code/fractofl/**.py`` is the running fractofl's file."""
    vendored = sorted((code / "fractofl").rglob("*.py"))
    for path in vendored:
        parts = path.relative_to(code).with_suffix("").parts
        if parts == ("fractofl", "__init__"):
            continue  # written by the packager: fractofl is a namespace package here
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        try:
            running = Path(str(importlib.import_module(name).__file__))
        except ImportError as exc:
            raise ArtifactError(f"{path}: this fractofl has no module {name} ({exc})") from exc
        if running.read_bytes() != path.read_bytes():
            raise ArtifactError(
                f"{path} differs from the running {running}: the artifact was built by "
                "another fractofl; package the version again with this one"
            )
    if not vendored:
        raise ArtifactError(f"{code} holds no vendored fractofl code; not a fractofl artifact")


def _import_file(path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(MODULE_NAME, path)
    if spec is None or spec.loader is None:
        raise ArtifactError(f"cannot import {path}; not a fractofl artifact")
    module = importlib.util.module_from_spec(spec)
    sys.modules[MODULE_NAME] = module  # dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(MODULE_NAME, None)
        raise ArtifactError(f"{path} failed to import: {exc}") from exc
    return module
