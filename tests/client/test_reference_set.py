"""A consortium reference set (``data.reference_dir``, ``member join --reference``): images
of every class that belong to no member, the same copy at every member. `synth
--reference` writes one; every member's ClientApp adds all of it to its training split
(never to its validation split); a real member uses only its own copy; the centralized
baseline pools it once; a folder that is not there is refused by name."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import ConfigRecord, Context, RecordDict
from PIL import Image

from fractofl.cli.main import main
from fractofl.client.app import _local_update, _member
from fractofl.client.member import member_reference_dir
from fractofl.client.node_config import DATA_DIR_KEY, PARTITION_KEY, REFERENCE_DIR_KEY
from fractofl.client.supernode import JoinSettings, MemberSetupError, node_config
from fractofl.core.config.run_config import RunConfig, to_flat
from fractofl.core.images.labelled import folder_identity
from fractofl.core.learning.member_data import ReferenceSetMissingError, load_member_data
from fractofl.core.synth.dataset import generate_reference_set, holdout_dir, member_dir
from fractofl.core.wire.update_protocol import EXAMPLES_KEY, REFERENCE_SET_KEY
from fractofl.server.centralized import pooled_training_data
from fractofl.server.coordinator import warn_of_a_reference_set_members_do_not_read
from tests.conftest import easy_spec

REFERENCE_PER_CLASS = 5


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A reference set in the easy set's style, written as `synth --reference` writes it."""
    root = tmp_path_factory.mktemp("consortium") / "reference"
    generate_reference_set(root, easy_spec(), REFERENCE_PER_CLASS)
    return root


def _cfg(easy_dataset: Path, reference: Path | None) -> RunConfig:
    cfg = RunConfig()
    cfg.data = dataclasses.replace(
        cfg.data,
        root=str(easy_dataset),
        cache_dir=str(easy_dataset / "cache"),
        reference_dir="" if reference is None else str(reference),
    )
    cfg.model.image_size = 32
    return cfg


def _digests(folder: Path) -> set[str]:
    return {hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*.png")}


def test_synth_writes_a_reference_set_of_images_no_member_and_no_test_set_has(
    tmp_path: Path, easy_dataset: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Execute
    out = tmp_path / "reference"
    code = main(["synth", str(out), "--reference", "3"])
    # Assert: 3 of each class, told how to use it
    assert code == 0
    assert {p.name: len(list(p.iterdir())) for p in out.iterdir() if p.is_dir()} == {
        "fatigue": 3,
        "ductile": 3,
        "cleavage": 3,
        "intergranular": 3,
    }
    assert f"data.reference_dir={out}" in capsys.readouterr().out
    # ... in a stream of its own: none of a set's members' or test images, same spec
    own = tmp_path / "easy-reference"
    generate_reference_set(own, easy_spec(), REFERENCE_PER_CLASS)
    others = _digests(holdout_dir(easy_dataset))
    for member in range(easy_spec().members):
        others |= _digests(member_dir(easy_dataset, member))
    assert len(_digests(own)) == 4 * REFERENCE_PER_CLASS
    assert not _digests(own) & others
    # ... and a folder with files in it is left as it is, unless it is a reference set
    # that --overwrite replaces; a folder of anyone's own images is never replaced
    assert main(["synth", str(out), "--reference", "2"]) == 1
    assert "holds a reference set already" in capsys.readouterr().err
    assert len(list(out.rglob("*.png"))) == 12
    assert main(["synth", str(out), "--reference", "2", "--overwrite"]) == 0
    assert len(list(out.rglob("*.png"))) == 8
    images = member_dir(easy_dataset, 0)
    before = _digests(images)
    assert main(["synth", str(images), "--reference", "2", "--overwrite"]) == 1
    assert "did not write; they are never replaced" in capsys.readouterr().err
    assert _digests(images) == before


def test_a_simulated_members_clientapp_trains_on_the_reference_set_and_validates_on_its_own(
    easy_dataset: Path, reference: Path
) -> None:
    # Prepare: member 0 as its ClientApp loads it, without and with the reference set
    alone = load_member_data(member_dir(easy_dataset, 0), _cfg(easy_dataset, None))
    cfg = _cfg(easy_dataset, reference)
    context = Context(1, 1, {PARTITION_KEY: 0}, RecordDict(), to_flat(cfg))
    # Execute
    cfg, data, model = _member(context)
    cfg.train = dataclasses.replace(cfg.train, local_epochs=1)
    _, metrics = _local_update(cfg, data, model, ConfigRecord({"server-round": 1}), context)
    # Assert: all of the reference set joins the training split, none the validation split;
    # the reply weighs it and names the copy
    classes = len(cfg.data.classes)
    assert metrics[EXAMPLES_KEY] == len(data.train)
    assert metrics[REFERENCE_SET_KEY] == folder_identity(reference, cfg.data.classes) != 0
    assert data.reference_images == 4 * REFERENCE_PER_CLASS
    assert len(data.train) == len(alone.train) + 4 * REFERENCE_PER_CLASS
    assert torch.equal(data.val.y, alone.val.y) and data.identity == alone.identity
    added = np.array(data.train.class_counts(classes)) - np.array(alone.train.class_counts(classes))
    assert added.tolist() == [REFERENCE_PER_CLASS] * classes
    # ... and the class mix the member serves (which personalization adapts to) is its own
    assert data.own_class_counts(classes) == alone.train.class_counts(classes)


def test_a_real_member_uses_only_the_copy_its_node_config_names(tmp_path: Path) -> None:
    cfg = RunConfig()
    cfg.data.reference_dir = "/the/coordinators/own/path"
    # A simulated member: the run's setting
    assert member_reference_dir({PARTITION_KEY: 2}, cfg) == Path("/the/coordinators/own/path")
    # A real member: never a folder the coordinator's config names; its own when it has one
    assert member_reference_dir({DATA_DIR_KEY: str(tmp_path)}, cfg) is None
    own = {DATA_DIR_KEY: str(tmp_path), REFERENCE_DIR_KEY: str(tmp_path / "ref")}
    assert member_reference_dir(own, cfg) == tmp_path / "ref"
    assert member_reference_dir({PARTITION_KEY: 2}, RunConfig()) is None


def test_member_join_passes_its_reference_set_and_refuses_a_missing_one(tmp_path: Path) -> None:
    # Prepare
    data, reference = tmp_path / "images", tmp_path / "reference"
    data.mkdir()
    settings = JoinSettings("coordinator:9092", data, None, None, 9094, reference_dir=reference)
    # Execute / Assert: a folder that is not there is named before anything starts
    with pytest.raises(MemberSetupError, match=f"--reference {reference} is not a folder"):
        settings.check()
    reference.mkdir()
    settings.check()
    assert f'{REFERENCE_DIR_KEY}="{reference.resolve()}"' in node_config(settings)
    no_reference = dataclasses.replace(settings, reference_dir=None)
    assert REFERENCE_DIR_KEY not in node_config(no_reference)


def test_a_missing_reference_set_is_named_with_what_to_do(
    tmp_path: Path, easy_dataset: Path
) -> None:
    cfg = _cfg(easy_dataset, tmp_path / "not-copied")
    context = Context(1, 1, {PARTITION_KEY: 1}, RecordDict(), to_flat(cfg))
    with pytest.raises(ReferenceSetMissingError) as raised:
        _member(context)
    message = str(raised.value)
    assert str(tmp_path / "not-copied") in message and "data.reference_dir" in message
    assert "copy the consortium's reference set there" in message


def test_the_centralized_baseline_pools_the_reference_set_once(
    easy_dataset: Path, reference: Path
) -> None:
    # Prepare
    members = [member_dir(easy_dataset, m) for m in range(easy_spec().members)]
    without = pooled_training_data(members, _cfg(easy_dataset, None))
    # Execute
    pooled = pooled_training_data(members, _cfg(easy_dataset, reference))
    # Assert
    assert len(pooled) == len(without) + 4 * REFERENCE_PER_CLASS


def test_a_reference_set_needs_an_image_per_class(tmp_path: Path) -> None:
    assert main(["synth", str(tmp_path / "r"), "--reference", "0"]) == 1
    assert not (tmp_path / "r").exists()


def test_a_reference_image_that_is_a_members_file_name_is_its_own_image(
    tmp_path: Path, easy_dataset: Path, reference: Path
) -> None:
    # A member's file with the same name as a reference image is a different image: the
    # two folders are read apart, nothing is merged by name
    member = tmp_path / "member"
    name = next((reference / "cleavage").iterdir()).name
    (member / "cleavage").mkdir(parents=True)
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(member / "cleavage" / name)
    cfg = _cfg(easy_dataset, reference)
    cfg.data.val_fraction = 0.0
    data = load_member_data(member, cfg, tmp_path / "cache", reference)
    assert len(data.train) == 1 + 4 * REFERENCE_PER_CLASS


def test_a_deployed_runs_reference_setting_is_said_to_reach_no_member(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cfg = RunConfig()
    cfg.data.reference_dir = "/coordinator/reference"
    with caplog.at_level("WARNING", logger="fractofl"):
        warn_of_a_reference_set_members_do_not_read(cfg)  # a simulation: its members read it
        assert not caplog.text
        cfg.output.engine = "deployment"
        warn_of_a_reference_set_members_do_not_read(cfg)
    assert "data.reference_dir=/coordinator/reference is for simulated members" in caplog.text
    assert "`member join --reference`" in caplog.text
