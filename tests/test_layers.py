"""Import directions: nothing imports upward (core <- client/strategies <- server <- cli)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

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


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


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
