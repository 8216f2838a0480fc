"""``fractofl keys init`` and ``fractofl models list | show | verify | export``."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
import torch

from fractofl.cli.main import main
from fractofl.core.config.taxonomy import DEFAULT_CLASSES
from fractofl.core.model.architectures import build_model, default_preprocessing
from fractofl.core.model.checkpoint import Checkpoint
from fractofl.core.trust.registry import MODEL_FILE, PUBLIC_KEY_FILE, ModelRegistry
from fractofl.core.trust.signing import fingerprint, load_private_key, load_public_key
from tests.conftest import run_fractofl


def _checkpoint(round_number: int) -> Checkpoint:
    torch.manual_seed(round_number)
    return Checkpoint(
        architecture="small_cnn",
        arch_args={"width": 8},
        classes=list(DEFAULT_CLASSES),
        preprocessing=default_preprocessing("small_cnn", 32),
        state_dict=build_model("small_cnn", 4, width=8).state_dict(),
        round=round_number,
        run_id="run-cli",
        metrics={"test_accuracy": 0.5 + round_number / 10},
    )


def _keys_init(tmp_path: Path, *extra: str) -> int:
    return main(
        [
            "keys",
            "init",
            "--private-key",
            str(tmp_path / "keys" / "c.key"),
            "--public-key",
            str(tmp_path / "keys" / "c.pub"),
            *extra,
        ]
    )


@pytest.fixture
def published(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Two versions signed with a key made by ``keys init``; returns the CLI options."""
    monkeypatch.delenv("FRACTOFL_KEY_PASSPHRASE", raising=False)
    assert _keys_init(tmp_path) == 0
    key = load_private_key(tmp_path / "keys" / "c.key", None)
    registry = ModelRegistry(tmp_path / "registry")
    registry.publish(_checkpoint(1), config_digest="d", parent=None, key=key)
    registry.publish(_checkpoint(2), config_digest="d", parent=1, key=key)
    return ["--registry", str(registry.root), "--public-key", str(tmp_path / "keys" / "c.pub")]


def test_keys_init_prints_the_public_key_never_the_private_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Prepare
    monkeypatch.setenv("TEST_KEY_PASS", "s3cret")
    # Execute
    code = _keys_init(tmp_path, "--passphrase-env", "TEST_KEY_PASS")
    out, err = capsys.readouterr()
    # Assert
    private = tmp_path / "keys" / "c.key"
    public_key = load_public_key(tmp_path / "keys" / "c.pub")
    assert code == 0
    assert "encrypted with the passphrase in $TEST_KEY_PASS" in out
    assert (tmp_path / "keys" / "c.pub").read_text() in out
    assert f"fingerprint: {fingerprint(public_key)}" in out
    assert "PRIVATE KEY-----" not in out + err
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert private.read_text().startswith("-----BEGIN ENCRYPTED PRIVATE KEY-----")
    assert fingerprint(load_private_key(private, b"s3cret").public_key()) == fingerprint(public_key)


def test_keys_init_takes_hydra_overrides_and_says_when_unencrypted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("FRACTOFL_KEY_PASSPHRASE", raising=False)
    private, public = tmp_path / "k" / "x.key", tmp_path / "k" / "x.pub"
    code = main(
        ["keys", "init", f"registry.private_key={private}", f"registry.public_key={public}"]
    )
    assert code == 0
    assert "NOT encrypted ($FRACTOFL_KEY_PASSPHRASE is unset)" in capsys.readouterr().out
    assert private.is_file() and public.is_file()


def test_keys_init_refuses_to_overwrite(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Prepare
    monkeypatch.delenv("FRACTOFL_KEY_PASSPHRASE", raising=False)
    assert _keys_init(tmp_path) == 0
    before = (tmp_path / "keys" / "c.key").read_bytes()
    capsys.readouterr()
    # Execute
    code = _keys_init(tmp_path)
    # Assert
    err = capsys.readouterr().err
    assert code == 1
    assert f"{tmp_path / 'keys' / 'c.key'} already exists" in err and "Traceback" not in err
    assert (tmp_path / "keys" / "c.key").read_bytes() == before


def test_models_list_show_and_verify(
    published: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    # list
    assert main(["models", "list", *published]) == 0
    listed = capsys.readouterr()
    lines = listed.out.splitlines()
    assert lines[0].split() == [
        "version",
        "round",
        "run",
        "id",
        "created",
        "test",
        "acc",
        "verified",
        "best",
    ]
    assert [line.split()[0] for line in lines[1:]] == ["v000001", "v000002"]
    assert all(line.split()[-1] == "yes" and "run-cli" in line for line in lines[1:])
    assert lines[2].split()[-2] == "0.700"
    # ... no version carries the default best metric (test_macro_f1): none marked, and why
    assert "no best version: registry.retention.best_metric='test_macro_f1'" in listed.err
    # show, by number and as the best by a metric the versions carry
    assert main(["models", "show", "2", *published]) == 0
    shown = capsys.readouterr()
    metadata = json.loads(shown.out)
    assert (metadata["version"], metadata["parent"], metadata["round"]) == (2, 1, 2)
    assert "verified: yes" in shown.err
    by_accuracy = "registry.retention.best_metric=test_accuracy"
    assert main(["models", "show", "best", *published, by_accuracy]) == 0
    assert json.loads(capsys.readouterr().out)["version"] == 2
    # verify
    assert main(["models", "verify", "--all", *published]) == 0
    out = capsys.readouterr().out
    assert "v000001: ok" in out and "v000002: ok" in out
    assert "members: not recorded)" in out  # published without them, as `report` says


def test_models_verify_exits_1_on_a_tampered_model(
    published: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Prepare
    model = tmp_path / "registry" / "v000002" / MODEL_FILE
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    capsys.readouterr()
    # Execute
    code_all = main(["models", "verify", "--all", *published])
    out_all, err_all = capsys.readouterr()
    code_one = main(["models", "verify", "1", *published])
    out_one, _ = capsys.readouterr()
    # Assert
    assert code_all == 1
    assert "v000001: ok" in out_all
    assert "v000002: weights changed after signing" in err_all and "Traceback" not in err_all
    assert code_one == 0 and "v000001: ok" in out_one
    assert main(["models", "list", *published]) == 0
    assert capsys.readouterr().out.splitlines()[2].split()[-1] == "NO"


def test_models_export_and_unknown_version(
    published: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "exported"
    assert main(["models", "export", "latest", str(out), *published]) == 0
    assert "exported v000002" in capsys.readouterr().out
    assert (out / PUBLIC_KEY_FILE).is_file() and (out / MODEL_FILE).is_file()
    assert main(["models", "show", "v000009", *published]) == 1
    assert "available: v000001, v000002" in capsys.readouterr().err


def test_end_to_end_with_the_installed_command(tmp_path: Path) -> None:
    # Prepare: keys made by the command, a model published with them, then tampered
    init = run_fractofl("keys", "init", "registry.passphrase_env=UNSET_TEST_VAR", cwd=tmp_path)
    assert init.returncode == 0, init.stderr
    key = load_private_key(tmp_path / "keys" / "coordinator.key", None)
    ModelRegistry(tmp_path / "registry").publish(
        _checkpoint(1), config_digest="d", parent=None, key=key
    )
    (tmp_path / "registry" / "v000001" / "signature").unlink()
    # Execute: the config's default paths, relative to the working folder
    result = run_fractofl("models", "verify", "latest", cwd=tmp_path)
    # Assert
    assert result.returncode == 1
    assert "v000001: unsigned" in result.stderr and "Traceback" not in result.stderr
