"""Each simulated member's own microscope: a feature shift that changes how members'
images look, never which surface they show, and leaves the coordinator's test set and
a shift of 0 exactly as before."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fractofl.cli.main import main
from fractofl.core.synth.dataset import (
    SynthSettingsError,
    generate_dataset,
    holdout_dir,
    member_dir,
)
from fractofl.core.synth.instruments import member_profiles
from tests.conftest import easy_spec


def _images(folder: Path) -> dict[str, np.ndarray]:
    return {
        p.relative_to(folder).as_posix(): np.asarray(Image.open(p))
        for p in sorted(folder.rglob("*.png"))
    }


def _stats(images: dict[str, np.ndarray]) -> tuple[float, float]:
    pixels = np.concatenate([image.ravel() for image in images.values()]).astype(np.float64)
    return float(pixels.mean()), float(pixels.std())


@pytest.fixture(scope="module")
def sets(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The same small set without and with a strong instrument shift."""
    spec = easy_spec(members=3, per_class=12)
    plain = tmp_path_factory.mktemp("plain") / "data"
    shifted = tmp_path_factory.mktemp("shifted") / "data"
    generate_dataset(plain, spec)
    generate_dataset(shifted, replace(spec, instrument_shift=1.0))
    return plain, shifted


def test_members_image_the_same_surfaces_through_their_own_instruments(
    sets: tuple[Path, Path],
) -> None:
    # Prepare
    plain, shifted = sets
    profiles = member_profiles(3, 1.0, easy_spec().seed)
    manifest = json.loads((shifted / "manifest.json").read_text())
    # Execute: each member's images without and with its instrument
    pairs = [(_images(member_dir(plain, m)), _images(member_dir(shifted, m))) for m in range(3)]
    # Assert: the same files (class and index), each changed by its member's instrument
    for (before, after), profile in zip(pairs, profiles, strict=True):
        assert before.keys() == after.keys()
        for name, image in before.items():
            index = int(name.rsplit("-", 1)[1].removesuffix(".png"))
            noise = np.random.default_rng([easy_spec().seed, 0, index, 2])
            assert np.array_equal(profile.apply(image, noise), after[name])
            assert not np.array_equal(image, after[name])
    # ... whose brightness and contrast differ from member to member, as their profiles say
    means = [_stats(after)[0] for _, after in pairs]
    spreads = [_stats(after)[1] for _, after in pairs]
    assert max(means) - min(means) > 10 and max(spreads) - min(spreads) > 3
    recorded = manifest["instruments"]
    assert recorded == {member_dir(shifted, m).name: profiles[m].to_dict() for m in range(3)}
    assert manifest["spec"]["instrument_shift"] == 1.0


def test_the_coordinator_test_set_and_a_shift_of_zero_are_unchanged(
    sets: tuple[Path, Path],
) -> None:
    # Prepare
    plain, shifted = sets
    spec = easy_spec(members=3, per_class=12)
    # Assert: the test set is bit-identical; a set without shift keeps its digest and has
    # no instruments in its manifest (sets made before this option are reused)
    before, after = _images(holdout_dir(plain)), _images(holdout_dir(shifted))
    assert before.keys() == after.keys()
    assert all(np.array_equal(before[k], after[k]) for k in before)
    manifest = json.loads((plain / "manifest.json").read_text())
    assert "instrument_shift" not in manifest["spec"] and "instruments" not in manifest
    assert manifest["digest"] == spec.digest() == replace(spec, instrument_shift=0.0).digest()
    assert all(p.is_identity for p in member_profiles(3, 0.0, spec.seed))


def test_a_shift_outside_zero_to_one_is_one_clear_line_and_nothing_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Execute
    code = main(["synth", str(tmp_path / "out"), "--instrument-shift", "1.5"])
    # Assert
    err = capsys.readouterr().err
    assert code == 1
    assert "data.synth.instrument_shift=1.5 must be between 0" in err
    assert "Traceback" not in err and not (tmp_path / "out").exists()
    with pytest.raises(SynthSettingsError):
        generate_dataset(tmp_path / "x", replace(easy_spec(), instrument_shift=-0.1))
