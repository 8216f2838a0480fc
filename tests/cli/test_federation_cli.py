"""The real-federation commands refuse what cannot work with one clear line, before any
process starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import run_fractofl


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["coordinator", "up"], "run `fractofl ca init` and `fractofl ca issue"),
        (
            ["coordinator", "run", "data.root=nowhere", "deployment.connect_timeout_s=1"],
            "the coordinator's test set",
        ),
        (
            ["member", "join", "--superlink", "coordinator:9092", "--data", "missing"],
            "--data missing is not a folder",
        ),
        (
            ["member", "join", "--superlink", "coordinator", "--data", "."],
            "is not HOST:PORT",
        ),
        (
            ["member", "join", "--superlink", "coordinator:9092", "--data", "."],
            "--key member/member.key does not exist",
        ),
        (["member", "add", "nobody.pub", "--name", "org"], "nobody.pub does not exist"),
        (["simulate", "privacy.dp=true", "strategy=krum"], "privacy.dp=true needs a mean"),
        (
            ["coordinator", "up", "--insecure", "deployment.superlink_host=0.0.0.0"],
            "deployment.superlink_host=0.0.0.0 would expose the SuperLink's Control API",
        ),
        (["member", "revoke", "org1"], "no active member called 'org1'"),
        (
            ["simulate", "privacy.secure_aggregation=true", "strategy=fedmedian"],
            "privacy.secure_aggregation=true hides individual updates",
        ),
    ],
)
def test_a_missing_file_or_bad_address_is_one_clear_line(
    args: list[str], message: str, tmp_path: Path
) -> None:
    # Execute
    result = run_fractofl(*args, cwd=tmp_path)
    # Assert
    assert result.returncode == 1, result.stdout + result.stderr
    assert message in result.stderr
    assert result.stderr.startswith("fractofl: error:") and "Traceback" not in result.stderr


def test_insecure_coordinator_without_front_warns_what_is_exposed(tmp_path: Path) -> None:
    # Execute: an address that cannot be bound, so that the SuperLink exits at once
    result = run_fractofl(
        "coordinator",
        "up",
        "--insecure",
        "--no-front",
        "deployment.superlink_host=192.0.2.1",
        cwd=tmp_path,
    )
    # Assert: both warnings, each naming what is open; the exit is reported
    assert "WARNING: --insecure" in result.stderr and "join as a member" in result.stderr
    assert "WARNING: --no-front: the SuperLink's Control API is open on 192.0.2.1" in (
        result.stderr
    )
    assert "start runs (which execute code on this machine)" in result.stderr
    assert "register or unregister SuperNodes" in result.stderr
    assert "the SuperLink exited" in result.stderr
    assert result.returncode != 0


def test_front_config_prints_the_fronts_nginx_configuration(tmp_path: Path) -> None:
    # Execute
    result = run_fractofl(
        "coordinator",
        "front-config",
        "deployment.front_port=9443",
        "deployment.front_max_body_mb=32",
        cwd=tmp_path,
    )
    # Assert: the configuration `coordinator up` writes, with these settings
    assert result.returncode == 0, result.stderr
    assert "listen 0.0.0.0:9443 ssl;" in result.stdout
    assert "client_max_body_size 32m;" in result.stdout
    assert "proxy_ssl_verify on;" in result.stdout
    assert str(tmp_path / "pki" / "ca.crt") in result.stdout


def test_a_member_policy_with_a_mistake_stops_the_join_naming_the_key(tmp_path: Path) -> None:
    # Prepare: a policy with a misspelt rule in the member's folder
    (tmp_path / "member").mkdir()
    (tmp_path / "member" / "policy.yaml").write_text("require_secure_agregation: true\n")
    # Execute
    result = run_fractofl(
        "member",
        "join",
        "--superlink",
        "coordinator:9092",
        "--data",
        ".",
        "--insecure",
        cwd=tmp_path,
    )
    # Assert: refused before any process starts, with the key and the valid ones named
    assert result.returncode == 1, result.stdout + result.stderr
    assert "unknown key(s) require_secure_agregation" in result.stderr
    assert "require_secure_aggregation" in result.stderr.split("valid:")[1]
    assert "Traceback" not in result.stderr


def test_member_approve_names_a_typo_and_keeps_what_it_approved(tmp_path: Path) -> None:
    # Prepare
    from fractofl.core.trust.app_bundle import fractofl_bundle

    member = f"deployment.member_dir={tmp_path / 'member'}"
    digest = "ab" * 32
    # Execute: a digest one character short, then the right one, then the list
    typo = run_fractofl("member", "approve", digest[:-1], member, cwd=tmp_path)
    approved = run_fractofl("member", "approve", digest, "--note", "reviewed", member, cwd=tmp_path)
    listing = run_fractofl("member", "approve", member, cwd=tmp_path)
    # Assert: the typo is refused by what is wrong with it, nothing written; the approval
    # warns that no run with it came yet; the list shows fractofl's own bundle and it
    assert typo.returncode == 1, typo.stdout + typo.stderr
    assert "63 characters long; a code digest is 64 hex digits" in typo.stderr
    assert "Traceback" not in typo.stderr
    assert approved.returncode == 0, approved.stderr
    assert f"runs with code digest {digest} run on this member" in approved.stdout
    assert "no run with this code has reached this member yet" in approved.stderr
    assert listing.stdout.splitlines()[0].startswith(fractofl_bundle().digest)
    assert f"{digest}  approved in {tmp_path / 'member' / 'approved-code.txt'}" in listing.stdout
