"""A member whose data folder is not where the run config says: the message names the
folder, the machine it runs on and what to do."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fractofl.client.member import MemberDataMissingError, member_data_dir, validation_gaps
from fractofl.client.node_config import DATA_DIR_KEY, PARTITION_KEY
from fractofl.core.config.run_config import RunConfig
from fractofl.core.learning.member_data import load_member_data
from fractofl.core.synth.dataset import member_dir


def test_a_simulated_member_without_its_folder_names_host_path_and_remedy(
    tmp_path: Path,
) -> None:
    # Prepare: a synthetic set's root that this machine does not have.
    cfg = RunConfig()
    cfg.data.root = str(tmp_path / "not-here")
    # Execute
    with pytest.raises(MemberDataMissingError) as raised:
        member_data_dir({PARTITION_KEY: 1}, cfg)
    # Assert
    message = str(raised.value)
    assert f"member data folder {member_dir(tmp_path / 'not-here', 1)} is not on " in message
    assert f"host {socket.gethostname()}" in message
    assert "every node needs every member's folder at this path" in message


def test_a_real_member_is_pointed_at_its_node_config(tmp_path: Path) -> None:
    with pytest.raises(MemberDataMissingError, match=r"--node-config 'data-dir="):
        member_data_dir({DATA_DIR_KEY: str(tmp_path / "gone")}, RunConfig())


def test_a_folder_that_is_there_is_returned(tmp_path: Path) -> None:
    assert member_data_dir({DATA_DIR_KEY: str(tmp_path)}, RunConfig()) == tmp_path


def _member_folder(root: Path, per_class: dict[str, int]) -> Path:
    rng = np.random.default_rng(0)
    for name, count in per_class.items():
        (root / name).mkdir(parents=True)
        for index in range(count):
            pixels = rng.integers(0, 255, (40, 40), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{index}.png")
    return root


def test_a_member_whose_validation_split_lacks_classes_is_told_which(tmp_path: Path) -> None:
    # Prepare: a member with images of two of the four classes, and one with too few
    cfg = RunConfig()
    two = _member_folder(tmp_path / "two", {"fatigue": 12, "ductile": 12})
    tiny = _member_folder(tmp_path / "tiny", {"fatigue": 1})
    data = load_member_data(two, cfg, tmp_path / "cache")
    counts = data.val.class_counts(len(cfg.data.classes))
    # Execute
    said = validation_gaps(data, cfg.data.classes)
    nothing = validation_gaps(load_member_data(tiny, cfg, tmp_path / "cache"), cfg.data.classes)
    # Assert: the classes its validation images lack, those it has no image of among them
    absent = [c for c, n in zip(cfg.data.classes, counts, strict=True) if n == 0]
    assert {"cleavage", "intergranular"} <= set(absent)
    assert said is not None and f"hold no {', '.join(absent)}:" in said
    assert "add images of them" in said
    assert nothing is not None and "no validation images" in nothing
