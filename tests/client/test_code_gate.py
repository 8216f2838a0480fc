"""The member's code gate: fractofl's own bundle and approved digests pass and are
recorded; any other bundle is refused before it is unpacked, with the digest and how to
approve it, and the refusal is recorded; the launcher is what the SuperNode finds."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from flwr.cli.build import build_fab_from_files

from fractofl.client.code_gate import (
    CODE_EVENT,
    REFUSED_CODE_EVENT,
    CodeNotApprovedError,
    add_approval,
    check_bundle,
    loaded_modules_replaced,
    read_approvals,
    remove_approval,
)
from fractofl.client.node_config import APPROVED_CODE_KEY, AUDIT_LOG_KEY, POLICY_KEY
from fractofl.client.policy import PolicyError, load_policy
from fractofl.client.supernode import with_code_gate
from fractofl.core.trust.app_bundle import BundleError, app_pyproject, fab_code
from fractofl.core.trust.audit_log import read_log, verify_log


def _own_fab() -> bytes:
    return build_fab_from_files({"pyproject.toml": app_pyproject({"seed": 3}).encode()})[0]


def _sidecar_fab() -> bytes:
    pyproject = app_pyproject({"seed": 3}).replace("fractofl.client.app:app", "sidecar:app")
    sidecar = b"open('/tmp/ran', 'w')\nfrom fractofl.client.app import app\n"
    return build_fab_from_files({"pyproject.toml": pyproject.encode(), "sidecar.py": sidecar})[0]


def _node_config(tmp_path: Path) -> dict[str, str]:
    return {
        AUDIT_LOG_KEY: str(tmp_path / "audit.log"),
        APPROVED_CODE_KEY: str(tmp_path / "approved-code.txt"),
    }


def _kinds(log: Path) -> list[str]:
    return [str(entry.event["kind"]) for entry in read_log(log)]


def test_fractofls_own_bundle_passes_and_is_recorded(tmp_path: Path) -> None:
    # Execute
    code = check_bundle(_own_fab(), _node_config(tmp_path), run_id=5)
    # Assert
    assert code.code_files == ()
    entries = list(read_log(tmp_path / "audit.log"))
    assert [e.event["kind"] for e in entries] == [CODE_EVENT]
    assert entries[0].event["code_digest"] == code.digest and entries[0].event["run_id"] == 5


def test_another_bundle_is_refused_with_its_digest_and_recorded(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Prepare
    digest = fab_code(_sidecar_fab()).digest
    # Execute
    with pytest.raises(CodeNotApprovedError) as refused:
        check_bundle(_sidecar_fab(), _node_config(tmp_path), run_id=6)
    # Assert: the coordinator's reason names the digest and what the bundle carries; the
    # member's log says how to approve; the audit log keeps the refusal, chain intact
    reason = str(refused.value)
    assert f"run 6 brings code this member did not approve (code digest {digest}" in reason
    assert "its ClientApp is sidecar:app and it ships 1 file(s) of its own: sidecar.py" in reason
    assert f"fractofl member approve {digest}" in caplog.text
    assert _kinds(tmp_path / "audit.log") == [REFUSED_CODE_EVENT]
    assert verify_log(tmp_path / "audit.log")[0] == 1


def test_an_approved_digest_passes_until_it_is_withdrawn(tmp_path: Path) -> None:
    # Prepare
    config = _node_config(tmp_path)
    approvals = tmp_path / "approved-code.txt"
    digest = fab_code(_sidecar_fab()).digest
    # Execute / Assert
    assert add_approval(approvals, digest.upper(), "reviewed by security, ticket 12")
    assert not add_approval(approvals, digest, "again")
    assert check_bundle(_sidecar_fab(), config, run_id=7).digest == digest
    assert oct(approvals.stat().st_mode & 0o777) == "0o600"
    assert "ticket 12" in read_approvals(approvals)[digest]
    assert remove_approval(approvals, digest)
    with pytest.raises(CodeNotApprovedError):
        check_bundle(_sidecar_fab(), config, run_id=8)
    assert _kinds(tmp_path / "audit.log") == [CODE_EVENT, REFUSED_CODE_EVENT]


def test_a_digest_in_the_policy_is_approved_and_a_typo_there_is_named(tmp_path: Path) -> None:
    # Prepare
    digest = fab_code(_sidecar_fab()).digest
    policy = tmp_path / "policy.yaml"
    policy.write_text(f"approved_code: [{digest}]\n")
    config = {**_node_config(tmp_path), POLICY_KEY: str(policy)}
    # Execute / Assert
    assert check_bundle(_sidecar_fab(), config, run_id=9).digest == digest
    policy.write_text(f"approved_code: [{digest[:-2]}]\n")
    with pytest.raises(PolicyError, match=r"policy.yaml: approved_code: .*62 characters long"):
        load_policy(policy)


def test_a_broken_approvals_file_is_named_by_line(tmp_path: Path) -> None:
    approvals = tmp_path / "approved-code.txt"
    approvals.write_text("# approved\n\nnot-a-digest  2026-12-03\n")
    with pytest.raises(BundleError, match=r"approved-code.txt:3: 'not-a-digest' is 12"):
        read_approvals(approvals)


def test_a_bundle_that_is_not_a_zip_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CodeNotApprovedError, match="run 4's bundle: the bundle is not a zip"):
        check_bundle(b"not a zip", _node_config(tmp_path), run_id=4)


@pytest.mark.parametrize("warm", [True, False], ids=["warm-member-absent", "cold"])
def test_the_supernode_finds_the_gates_launcher_and_it_runs_flowers_clientapp(
    tmp_path: Path, warm: bool
) -> None:
    # Execute: the environment `member join` (or `member join --cold`) gives the SuperNode
    env = with_code_gate({"PATH": os.environ["PATH"]}, tmp_path / "member", warm=warm)
    launcher = shutil.which("flwr-clientapp", path=env["PATH"])
    # Assert: found first, owner-only, and it is Flower's ClientApp (its own --help)
    assert launcher == str(tmp_path / "member" / "bin" / "flwr-clientapp")
    assert oct(Path(launcher).stat().st_mode & 0o777) == "0o700"
    shown = subprocess.run(
        [launcher, "--help"], capture_output=True, text=True, timeout=120, check=False
    )
    assert shown.returncode == 0, shown.stderr
    assert "Run a Flower ClientApp" in shown.stdout


def test_a_bundle_shipping_a_module_already_loaded_is_named() -> None:
    # Prepare: a bundle with its own copy of fractofl's ClientApp module and a new module
    pyproject = app_pyproject({})
    fab = build_fab_from_files(
        {
            "pyproject.toml": pyproject.encode(),
            "fractofl/client/code_gate.py": b"print('mine')\n",
            "fresh_module_for_the_test.py": b"x = 1\n",
        }
    )[0]
    # Execute
    replaced = loaded_modules_replaced(fab_code(fab))
    # Assert: the loaded one (this process has it) would run, not the bundle's: named
    assert replaced == ["fractofl.client.code_gate"]
