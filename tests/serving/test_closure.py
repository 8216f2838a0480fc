"""The import closure that decides which fractofl modules the artifact vendors."""

from __future__ import annotations

from pathlib import Path

import pytest

from fractofl.serving import inference
from fractofl.serving.closure import ClosureError, import_closure


def test_inference_needs_exactly_the_model_preprocessing_decoding_heatmap_and_map_modules() -> None:
    # Execute
    closure = import_closure(Path(inference.__file__))
    # Assert
    assert [m.name for m in closure] == [
        "fractofl.core",
        "fractofl.core.images",
        "fractofl.core.images.databar",
        "fractofl.core.images.imageio",
        "fractofl.core.images.physical_scale",
        "fractofl.core.images.preprocessing",
        "fractofl.core.images.scale",
        "fractofl.core.images.tiles",
        "fractofl.core.model",
        "fractofl.core.model.architectures",
        "fractofl.serving",
        "fractofl.serving.contract",
        "fractofl.serving.decoding",
        "fractofl.serving.heatmap",
        "fractofl.serving.mechanism_map",
        "fractofl.serving.request_errors",
        "fractofl.serving.safetensors_io",
    ]
    paths = {m.name: m.archive_path for m in closure}
    assert paths["fractofl.core"] == "fractofl/core/__init__.py"
    assert paths["fractofl.core.model.architectures"] == "fractofl/core/model/architectures.py"


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("import flwr\n", r"entry\.py imports flwr .*does not have"),
        ("from hydra import compose\n", "imports hydra"),
        # registry.py imports cryptography unguarded: the chain names who pulled it in
        (
            "from fractofl.core.trust.registry import ModelRegistry\n",
            "fractofl.core.trust.registry imports cryptography",
        ),
        ("from fractofl.cli import main\n", "only fractofl.core, fractofl.serving ship"),
        ("try:\n    import boto3\nexcept ImportError:\n    pass\n", "imports boto3"),
    ],
)
def test_anything_the_container_lacks_fails_packaging(
    tmp_path: Path, source: str, message: str
) -> None:
    # Prepare
    entry = tmp_path / "entry.py"
    entry.write_text(source)
    # Execute / Assert
    with pytest.raises(ClosureError, match=message):
        import_closure(entry)


def test_guarded_optional_vendored_and_type_checking_imports_are_allowed(tmp_path: Path) -> None:
    # Prepare
    entry = tmp_path / "entry.py"
    entry.write_text(
        "from typing import TYPE_CHECKING\n"
        "import numpy\n"
        "import ecdsa\n"  # the artifact carries it (serving/vendored.py)
        "from fractofl.core.images.preprocessing import Preprocessing\n"
        "if TYPE_CHECKING:\n"
        "    import flwr\n"
        "def verify():\n"
        "    try:\n"
        "        from sagemaker_inference import content_types\n"
        "    except (ImportError, OSError):\n"
        "        return None\n"
    )
    # Execute
    closure = import_closure(entry)
    # Assert
    assert [m.name for m in closure] == [
        "fractofl.core",
        "fractofl.core.images",
        "fractofl.core.images.databar",
        "fractofl.core.images.physical_scale",
        "fractofl.core.images.preprocessing",
        "fractofl.core.images.scale",
        "fractofl.core.images.tiles",
    ]
