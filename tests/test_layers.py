"""Import directions: nothing imports upward (core <- client/strategies <- server <- cli),
and inside ``core`` each subpackage imports only the subpackages beneath it."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CORE = REPO / "core"

# package folder -> fractofl sub-packages it must never import
FORBIDDEN = {
    "core": {"client", "server", "strategies", "serving", "cli", "conf"},
    "client": {"server", "strategies", "serving", "cli"},
    "strategies": {"client", "server", "serving", "cli"},
    "server": {"client", "serving", "cli"},
    "serving": {"client", "server", "strategies", "cli"},
}
# third-party packages a layer must not import
FORBIDDEN_THIRD_PARTY = {
    "core": {"flwr", "hydra", "omegaconf", "matplotlib"},
    "serving": {"flwr", "hydra", "omegaconf"},
    "client": {"hydra", "omegaconf"},
    "server": {"hydra", "omegaconf"},
    # strategies use torch only as a numeric kernel (strategies/mean.py: numpy has no
    # in-place axpy); models and training stay out of them.
    "strategies": {"hydra", "omegaconf", "torchvision"},
}
# core subpackage -> the other core subpackages it may import (each one's docstring says so)
CORE_ALLOWED: dict[str, set[str]] = {
    "config": set(),
    "files": set(),
    "processes": set(),
    "images": {"config", "files"},
    "model": {"config", "files", "images"},
    "learning": {"config", "files", "images", "model"},
    "wire": {"config"},
    "trust": {"config", "files", "model"},
    "synth": {"config", "files", "images"},
}
# third-party packages a core subpackage must not import, beyond FORBIDDEN_THIRD_PARTY["core"]
CORE_FORBIDDEN_THIRD_PARTY: dict[str, set[str]] = {
    "config": {"numpy", "torch", "torchvision", "PIL", "cryptography"},
    "files": {"numpy", "torch", "torchvision", "PIL", "cryptography"},
    "processes": {"numpy", "torch", "torchvision", "PIL", "cryptography"},
    # the coordinator decodes and screens updates with numpy alone
    "wire": {"torch", "torchvision", "PIL", "cryptography"},
}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            # ``from fractofl.core import images`` names a subpackage too
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def _core_subpackages() -> list[str]:
    return sorted(p.name for p in CORE.iterdir() if (p / "__init__.py").is_file())


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layer_imports_only_downward(layer: str) -> None:
    offending = []
    for path in sorted((REPO / layer).rglob("*.py")):
        for name in _imports(path):
            parts = name.split(".")
            if parts[0] == "fractofl" and len(parts) > 1 and parts[1] in FORBIDDEN[layer]:
                offending.append(f"{path.relative_to(REPO)} imports {name}")
            if parts[0] in FORBIDDEN_THIRD_PARTY[layer]:
                offending.append(f"{path.relative_to(REPO)} imports {name}")
    assert offending == []


def test_core_holds_only_subpackages_each_with_a_rule() -> None:
    # Execute
    loose_modules = sorted(p.name for p in CORE.glob("*.py") if p.name != "__init__.py")
    # Assert: every module lives in a subpackage, and every subpackage has its rule here
    assert loose_modules == []
    assert _core_subpackages() == sorted(CORE_ALLOWED)


@pytest.mark.parametrize("subpackage", sorted(CORE_ALLOWED))
def test_core_subpackage_imports_only_what_its_rule_allows(subpackage: str) -> None:
    # Prepare
    allowed = CORE_ALLOWED[subpackage] | {subpackage}
    third_party = CORE_FORBIDDEN_THIRD_PARTY.get(subpackage, set())
    offending = []
    # Execute
    for path in sorted((CORE / subpackage).rglob("*.py")):
        for name in _imports(path):
            parts = name.split(".")
            if parts[:2] == ["fractofl", "core"] and len(parts) > 2 and parts[2] not in allowed:
                offending.append(f"{path.relative_to(REPO)} imports {name}")
            if parts[0] in third_party:
                offending.append(f"{path.relative_to(REPO)} imports {name}")
    # Assert
    assert offending == []


@pytest.mark.parametrize("subpackage", sorted(CORE_ALLOWED))
def test_core_subpackage_says_what_it_is_for_and_what_it_may_import(subpackage: str) -> None:
    # Execute
    module = importlib.import_module(f"fractofl.core.{subpackage}")
    doc = module.__doc__ or ""
    # Assert: a paragraph of purpose, and every other subpackage named as allowed or not
    assert len(doc.split()) >= 25
    others = set(CORE_ALLOWED) - {subpackage}
    if CORE_ALLOWED[subpackage]:
        assert all(f"``{name}``" in doc for name in others), doc
    else:
        assert (
            "imports none of them" in doc
            or "no other part of ``core``" in doc
            or ("every other part of ``core`` may use it" in doc)
        ), doc
