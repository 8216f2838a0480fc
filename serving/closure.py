"""The fractofl modules that ``inference.py`` needs, found by reading imports (AST).

The SageMaker artifact vendors exactly these files under ``code/fractofl/``, so the
container runs the model and preprocessing code that trained the model. Anything else
they import must already be in the SageMaker PyTorch image (the standard library,
torch, torchvision, numpy or PIL) or be one of the pure-Python packages the artifact
carries (:data:`~fractofl.serving.vendored.VENDORED`); an import guarded by ``try: ...
except ImportError`` may also name one of :data:`OPTIONAL_PACKAGES`. Anything more (flwr,
Hydra, a fractofl module outside the shippable packages) fails packaging with the chain of
imports that reached it.
"""

from __future__ import annotations

import ast
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path

from fractofl.serving.errors import ArtifactError
from fractofl.serving.vendored import VENDORED

ROOT_PACKAGE = "fractofl"
SHIPPABLE_PACKAGES = ("fractofl.core", "fractofl.serving")
CONTAINER_PACKAGES = frozenset({"torch", "torchvision", "numpy", "PIL"})
OPTIONAL_PACKAGES = frozenset({"sagemaker_inference"})
_IMPORT_ERRORS = {"ImportError", "ModuleNotFoundError"}


class ClosureError(ArtifactError):
    """A module that ``inference.py`` needs imports something the container lacks."""


@dataclass(frozen=True)
class VendoredModule:
    """One fractofl module to ship: its dotted name and its source file."""

    name: str
    source: Path

    @property
    def archive_path(self) -> str:
        """Its path under ``code/``: ``fractofl.core.model.architectures`` ->
        ``fractofl/core/model/architectures.py``."""
        parts = self.name.split(".")
        tail = "__init__.py" if self.source.name == "__init__.py" else f"{parts.pop()}.py"
        return "/".join([*parts, tail])


def import_closure(entry: Path) -> list[VendoredModule]:
    """The fractofl modules (and their packages' ``__init__``) that ``entry`` imports,
    directly or not, sorted by name; the root package ``fractofl`` itself is left out
    (it is a namespace package here and gets an empty ``__init__.py`` in the artifact).
    """
    found: dict[str, VendoredModule] = {}
    pending: list[tuple[Path, tuple[str, ...]]] = [(entry, (entry.name,))]
    while pending:
        path, chain = pending.pop()
        for name, optional in _imports(path):
            for module in _with_parents(name) if _is_fractofl(name) else []:
                if module in found:
                    continue
                vendored = _locate(module, chain)
                found[module] = vendored
                pending.append((vendored.source, (*chain, module)))
            if not _is_fractofl(name):
                _check_external(name, optional, chain)
    return sorted(found.values(), key=lambda m: m.name)


def _imports(path: Path) -> list[tuple[str, bool]]:
    """Absolute module names imported by a file, each with whether an ImportError
    handler guards it; imports under ``if TYPE_CHECKING:`` are skipped."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names: list[tuple[str, bool]] = []

    def visit(node: ast.AST, guarded: bool) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            return
        if isinstance(node, ast.Import):
            names.extend((alias.name, guarded) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                raise ClosureError(f"{path}: relative import; use absolute fractofl imports")
            module = node.module or ""
            names.append((module, guarded))
            # ``from fractofl.core.model import architectures`` imports a submodule
            if _is_fractofl(module):
                names.extend(
                    (f"{module}.{a.name}", guarded)
                    for a in node.names
                    if _exists(f"{module}.{a.name}")
                )
        body_guarded = guarded or (
            isinstance(node, ast.Try) and any(_catches_import_error(h) for h in node.handlers)
        )
        for field_name, value in ast.iter_fields(node):
            children = value if isinstance(value, list) else [value]
            inner = body_guarded if field_name == "body" else guarded
            for child in children:
                if isinstance(child, ast.AST):
                    visit(child, inner)

    visit(tree, False)
    return names


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _catches_import_error(handler: ast.ExceptHandler) -> bool:
    kinds = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    return any(isinstance(k, ast.Name) and k.id in _IMPORT_ERRORS for k in kinds)


def _is_fractofl(name: str) -> bool:
    return name == ROOT_PACKAGE or name.startswith(f"{ROOT_PACKAGE}.")


def _with_parents(name: str) -> list[str]:
    """``fractofl.core.model.architectures`` -> ``fractofl.core``, ``fractofl.core.model``,
    ``fractofl.core.model.architectures``."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(2, len(parts) + 1)]


def _exists(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


def _locate(module: str, chain: tuple[str, ...]) -> VendoredModule:
    via = " -> ".join((*chain, module))
    if not module.startswith(tuple(f"{p}." for p in SHIPPABLE_PACKAGES)) and (
        module not in SHIPPABLE_PACKAGES
    ):
        raise ClosureError(
            f"the SageMaker artifact would need {module} ({via}); only "
            f"{', '.join(SHIPPABLE_PACKAGES)} ship. Move that import out of the served code"
        )
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
        raise ClosureError(f"cannot find the source of {module} ({via}); is fractofl installed?")
    return VendoredModule(module, Path(spec.origin))


def _check_external(name: str, optional: bool, chain: tuple[str, ...]) -> None:
    top = name.split(".")[0]
    if top in sys.stdlib_module_names or top in CONTAINER_PACKAGES or top in VENDORED:
        return
    if optional and top in OPTIONAL_PACKAGES:
        return
    allowed = ", ".join(sorted(CONTAINER_PACKAGES | set(VENDORED)))
    raise ClosureError(
        f"{chain[-1]} imports {name} ({' -> '.join(chain)}), which the SageMaker PyTorch "
        f"image does not have: served code may import the standard library and {allowed}"
        f" (and, inside try/except ImportError, {', '.join(sorted(OPTIONAL_PACKAGES))}). "
        "Move that import into the code that needs it, outside the served modules"
    )
