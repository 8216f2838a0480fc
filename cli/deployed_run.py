"""A run on the Deployment Engine, new or resumed: ``fractofl coordinator run | resume``.

The composed config goes to the SuperLink as a Flower app (``flwr run``). Flower's log is
streamed to the terminal and kept, the rounds are shown from the run folder as they
complete (:class:`~fractofl.server.run_watch.RunWatcher`), and a run that ends early
says why, from Flower's log, and how to continue it.
"""

from __future__ import annotations

import collections
import logging
import re
import subprocess
import sys
from pathlib import Path

from fractofl.core.config.run_config import RunConfig, config_digest
from fractofl.core.trust.app_bundle import BundleCode, fab_code, fractofl_bundle
from fractofl.server.errors import RunFolderError
from fractofl.server.round_state import STATE_FILE
from fractofl.server.superlink import DeploymentError, control_host, is_listening

log = logging.getLogger("fractofl")

KEPT_LOG_LINES = 400
# The last "SomethingError: message" line of a Python traceback in Flower's log.
_ERROR_LINE = re.compile(r"(?:^|\s)([A-Za-z_][\w.]*(?:Error|Exception)): (.+)$")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# Flower's CLI prints its own errors in a box: "╭─ Error ─...╮", "│ text │" lines, "╰─...╯".
_BOX_START, _BOX_SIDE, _BOX_END = "╭─ Error", "│", "╰"


def resume_command(run_dir: Path) -> str:
    """The command that continues the run in ``run_dir``."""
    return f"fractofl coordinator resume {run_dir}"


def failure_reason(lines: list[str]) -> str | None:
    """Why a run ended, from the end of Flower's log: the exception of the last traceback
    (``NotEnoughMembersError: round 3: ...``) or Flower's own error box (``Connection to
    the SuperLink is unavailable ...``), whichever came last."""
    plain = [_ANSI.sub("", line).rstrip() for line in lines]
    for index in range(len(plain) - 1, -1, -1):
        if plain[index].startswith(_BOX_END) and index:
            box = _error_box(plain, index)
            if box:
                return box
        match = _ERROR_LINE.search(plain[index])
        if match:
            return f"{match.group(1).rsplit('.', 1)[-1]}: {match.group(2)}"
    return None


def _error_box(lines: list[str], end: int) -> str | None:
    """The text of the rich error box that ends at ``lines[end]``, if it is one."""
    start = end - 1
    while start >= 0 and lines[start].startswith(_BOX_SIDE):
        start -= 1
    if start < 0 or not lines[start].startswith(_BOX_START):
        return None
    words = " ".join(line.strip(_BOX_SIDE + " ") for line in lines[start + 1 : end])
    return " ".join(words.split()) or None


def bundle_code_of(app_dir: Path) -> BundleCode:
    """The code digest of the bundle ``flwr run`` builds from ``app_dir`` (built the way
    Flower builds it, so the digest is the one members' code gates compute)."""
    from flwr.cli.build import build_fab_from_disk

    return fab_code(build_fab_from_disk(app_dir))


def check_coordinator_up(cfg: RunConfig, run_dir: Path) -> None:
    """Refuse, saying what to do, when no SuperLink listens where ``cfg`` says."""
    deployment = cfg.deployment
    host = control_host(deployment)
    if not is_listening(host, deployment.superlink_port):
        raise DeploymentError(
            f"the coordinator is not up: nothing answers on {host}:{deployment.superlink_port}"
            f" (deployment.superlink_host/superlink_port). Start it with `fractofl coordinator"
            f" up` and the same deployment settings, wait until the members are online "
            f"(`fractofl coordinator status`), then run `{resume_command(run_dir)}` again"
        )


def run_deployed(cfg: RunConfig) -> int:
    """Start the run of ``cfg`` (``output.resume``: continue it) on the SuperLink, follow
    it to the end and report it; the exit code."""
    from fractofl.cli.main import report_run
    from fractofl.cli.simulation import flower_app_config
    from fractofl.core.processes.flower_executables import flower_env, flower_tool
    from fractofl.server.audit_trail import CoordinatorAudit, coordinator_audit_path, who
    from fractofl.server.evaluation import coordinator_test_dir
    from fractofl.server.run_folder import SUMMARY_FILE
    from fractofl.server.run_watch import RunWatcher, finished_table
    from fractofl.server.superlink import CONNECTION, CoordinatorFiles, wait_for_port

    test_dir = coordinator_test_dir(cfg)
    if not test_dir.is_dir():
        raise DeploymentError(
            f"the coordinator's test set {test_dir} does not exist: set data.test_dir to a "
            "folder of labelled images (one sub-folder per class), or generate the synthetic "
            "set with `fractofl synth` and point data.root at it"
        )
    deployment = cfg.deployment
    files = CoordinatorFiles.from_config(deployment)
    wait_for_port(control_host(deployment), deployment.superlink_port, deployment.connect_timeout_s)
    app_dir = files.state_dir / "apps" / cfg.output.name
    app_dir.mkdir(parents=True, exist_ok=True)
    (app_dir / "pyproject.toml").write_text(flower_app_config(cfg))
    code = bundle_code_of(app_dir)
    CoordinatorAudit(coordinator_audit_path(cfg)).record(
        "run-requested",
        run_name=cfg.output.name,
        config_digest=config_digest(cfg),
        code_digest=code.digest,
        resume=cfg.output.resume,
        **who(),
    )
    print(
        f"members run this run's ClientApp only if they approved its code: code digest "
        f"{code.digest}"
        + (
            " (fractofl's own bundle, which every member's code gate approves)"
            if code.digest == fractofl_bundle().digest
            else f" ({code.describe()}; members approve it with `fractofl member approve`)"
        ),
        flush=True,
    )
    run_dir = Path(cfg.output.root) / cfg.output.name
    # The ServerApp runs beside the SuperLink: follow its rounds through the run folder.
    watcher = RunWatcher(run_dir, cfg.federation.rounds).start()
    try:
        status, lines = _stream(
            [flower_tool("flwr"), "run", str(app_dir), CONNECTION, "--stream"],
            flower_env(files.flwr_home),
        )
    finally:
        watcher.stop()
    if (run_dir / SUMMARY_FILE).is_file():
        log.info("%s", finished_table(run_dir))
        return report_run(run_dir)
    reason = failure_reason(lines) or f"`flwr run` exited {status}"
    hint = (
        f"continue it with `{resume_command(run_dir)}`"
        if (run_dir / STATE_FILE).is_file()
        else "no round completed; start it again"
    )
    print(
        f"fractofl: the run did not finish: {reason}. The run folder is {run_dir}; {hint}",
        file=sys.stderr,
    )
    return 1


def _stream(command: list[str], env: dict[str, str]) -> tuple[int, list[str]]:
    """Run ``command``, echoing its output; its exit code and its last lines."""
    kept: collections.deque[str] = collections.deque(maxlen=KEPT_LOG_LINES)
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert process.stdout is not None
    for line in process.stdout:
        sys.stdout.write(line)
        sys.stdout.flush()
        kept.append(line)
    return process.wait(), list(kept)


def resume_deployed(cfg: RunConfig, run_dir: Path) -> int:
    """Continue a deployed run: the coordinator must be up again."""
    if not (run_dir / STATE_FILE).is_file():
        raise RunFolderError(
            f"{run_dir} has no checkpoint: no round completed, so there is nothing to "
            "continue; start the run again with `fractofl coordinator run`"
        )
    check_coordinator_up(cfg, run_dir)
    return run_deployed(cfg)
