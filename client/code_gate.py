"""The member's code gate: a run's ClientApp code runs only if this member approved it.

Flower's SuperNode starts one ``flwr-clientapp`` process per instruction, by that name on
its ``PATH``. ``fractofl member join`` puts a launcher of that name first on the
SuperNode's ``PATH`` (``deployment.member_dir/bin/flwr-clientapp``,
:mod:`fractofl.client.warm_launcher`), which has the warm member run Flower's own
``flwr-clientapp`` with one step added after the instruction and the run's app bundle
(FAB) have arrived and before the bundle is unpacked, imported or run: the bundle's code
digest (:mod:`fractofl.core.trust.app_bundle`) must be approved. Approved are
fractofl's own bundle (which runs the fractofl this member installed), the digests in
``deployment.member_dir/approved-code.txt`` (``fractofl member approve``) and those in
the policy's ``approved_code``. Anything else is refused: Flower sends the coordinator an
error reply with the reason, the member's log says why and how to approve, and the
member's audit log records the refusal (``refused-code``) as it records every approved
bundle (``code``).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fractofl.client.message_pull import pull_sooner
from fractofl.client.node_config import APPROVED_CODE_KEY, AUDIT_LOG_KEY, POLICY_KEY
from fractofl.core.trust.app_bundle import BundleCode, BundleError, fab_code, fractofl_bundle
from fractofl.core.trust.app_bundle import parse_digest as parse_code_digest
from fractofl.core.wire.update_protocol import CODE_REFUSAL

log = logging.getLogger("fractofl")

APPROVED_CODE_FILE = "approved-code.txt"
CODE_EVENT, REFUSED_CODE_EVENT = "code", "refused-code"
OWN_BUNDLE = "fractofl's own bundle (runs the installed fractofl)"
APPROVE = "fractofl member approve"


class CodeNotApprovedError(RuntimeError):
    """A run's bundle carries code this member did not approve."""


class WarmMemberDownError(RuntimeError):
    """The member's warm process, which runs its ClientApps, is not there."""


class CodeGateError(RuntimeError):
    """The gate cannot be put in place (Flower's ClientApp runtime is not the one it knows)."""


def read_approvals(path: Path) -> dict[str, str]:
    """The digests approved in ``path`` (``<digest>  <date>  <note>`` per line, ``#``
    comments), each with its line; BundleError naming the file and line at fault."""
    if not path.is_file():
        return {}
    approvals: dict[str, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        try:
            approvals[parse_code_digest(text.split()[0])] = text
        except BundleError as exc:
            raise BundleError(f"{path}:{number}: {exc}") from None
    return approvals


def add_approval(path: Path, digest: str, note: str) -> bool:
    """Approve ``digest`` in ``path`` (created owner-only); False if it already was."""
    digest = parse_code_digest(digest)
    if digest in read_approvals(path):
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    header = "" if path.is_file() else f"# code digests this member approved ({APPROVE})\n"
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    with path.open("a") as handle:
        handle.write(f"{header}{digest}  {stamp}  {' '.join(note.split())}\n")
    path.chmod(0o600)
    return True


def remove_approval(path: Path, digest: str) -> bool:
    """Withdraw ``digest`` from ``path``; False if it was not there."""
    digest = parse_code_digest(digest)
    if digest not in read_approvals(path):
        return False
    kept = [
        line
        for line in path.read_text().splitlines()
        if not line.strip() or line.strip().startswith("#") or line.split()[0].lower() != digest
    ]
    path.write_text("".join(f"{line}\n" for line in kept))
    return True


def approved_code(node_config: Mapping[str, Any]) -> dict[str, str]:
    """Every approved digest with where its approval comes from."""
    from fractofl.client.policy import load_policy

    approved = {fractofl_bundle().digest: OWN_BUNDLE}
    approvals = node_config.get(APPROVED_CODE_KEY)
    if approvals:
        for digest in read_approvals(Path(str(approvals))):
            approved.setdefault(digest, str(approvals))
    policy = node_config.get(POLICY_KEY)
    if policy:
        for digest in load_policy(Path(str(policy))).approved_code:
            approved.setdefault(digest, f"{policy} (approved_code)")
    return approved


def check_bundle(fab: bytes, node_config: Mapping[str, Any], run_id: int) -> BundleCode:
    """The bundle's code if this member approved it, recorded in the audit log;
    CodeNotApprovedError saying why and how to approve, recorded too, if not."""
    from fractofl.core.trust.audit_log import append_event

    audit = node_config.get(AUDIT_LOG_KEY)
    try:
        code = fab_code(fab)
    except BundleError as exc:
        raise CodeNotApprovedError(f"{CODE_REFUSAL} run {run_id}'s bundle: {exc}") from None
    approved = approved_code(node_config)
    event = {
        "run_id": run_id,
        "code_digest": code.digest,
        "clientapp": code.clientapp,
        "code_files": list(code.code_files),
    }
    if code.digest in approved:
        if audit:
            append_event(Path(str(audit)), {"kind": CODE_EVENT, **event})
        return code
    if audit:
        append_event(Path(str(audit)), {"kind": REFUSED_CODE_EVENT, **event})
    reason = (
        f"{CODE_REFUSAL} run {run_id} brings code this member did not approve (code digest "
        f"{code.digest}: {code.describe()}); it runs only fractofl's own bundle "
        f"({fractofl_bundle().digest[:12]}...) and the digests it approved"
    )
    log.error(
        "%s. To run it, check the digest against the one `fractofl coordinator run` "
        "printed, then: fractofl member approve %s",
        reason,
        code.digest,
    )
    raise CodeNotApprovedError(reason)


def loaded_modules_replaced(code: BundleCode) -> list[str]:
    """The modules, already loaded in this process, that the bundle ships its own copy of:
    Python would keep running the loaded ones (the installed fractofl), not the bundle's."""
    replaced = []
    for path in code.code_files:
        if not path.endswith(".py"):
            continue
        module = path[: -len(".py")].removesuffix("/__init__").replace("/", ".")
        if module in sys.modules:
            replaced.append(module)
    return replaced


def install_gate(unavailable: str | None = None) -> None:
    """Put the check into Flower's ClientApp runtime, between receiving the bundle and
    unpacking it; with ``unavailable``, every instruction is answered with that error
    instead (the warm member is down). CodeGateError when the runtime does not have the
    steps it expects (another Flower than 1.42): the gate never lets a bundle through
    unchecked."""
    from flwr.supernode.runtime import run_clientapp as runtime

    steps = ("pull_task_input", "install_from_fab")
    missing = [name for name in steps if not callable(getattr(runtime, name, None))]
    if missing:
        raise CodeGateError(
            f"Flower's ClientApp runtime has no {', '.join(missing)}: this fractofl's code gate "
            "knows flwr 1.42's; install the flwr version fractofl pins"
        )
    pulled: dict[str, Any] = {}
    pull: Callable[..., Any] = runtime.pull_task_input
    install: Callable[..., Any] = runtime.install_from_fab

    def pull_then_keep(*args: Any, **kwargs: Any) -> Any:
        message, context, run, fab = pull(*args, **kwargs)
        pulled.update(node_config=dict(context.node_config), run_id=run.run_id)
        return message, context, run, fab

    def check_then_install(fab_content: bytes, *args: Any, **kwargs: Any) -> Any:
        if unavailable is not None:
            raise WarmMemberDownError(unavailable)
        if "run_id" not in pulled:
            raise CodeNotApprovedError(f"{CODE_REFUSAL} a bundle came without its run")
        code = check_bundle(fab_content, pulled["node_config"], int(pulled["run_id"]))
        replaced = loaded_modules_replaced(code)
        if replaced:
            raise CodeNotApprovedError(
                f"{CODE_REFUSAL} run {pulled['run_id']}'s bundle ships its own "
                f"{', '.join(replaced)}, which this member's process runs from the installed "
                "fractofl: install that code instead of shipping it"
            )
        return install(fab_content, *args, **kwargs)

    runtime.pull_task_input = pull_then_keep  # type: ignore[assignment]
    runtime.install_from_fab = check_then_install  # type: ignore[assignment]


def log_to_stderr() -> None:
    """fractofl's messages on stderr (the member's terminal), not through the root
    logger, whose handlers would print Flower's lines a second time."""
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s fractofl: %(message)s"))
        log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False


def main(unavailable: str | None = None) -> None:
    """Flower's ``flwr-clientapp`` behind the code gate, on ``sys.argv`` (in a process the
    warm member forked; with ``unavailable``, in the launcher itself, to answer the
    instruction with that error)."""
    log_to_stderr()
    install_gate(unavailable)
    pull_sooner()
    from flwr.supernode.cli.flwr_clientapp import flwr_clientapp

    flwr_clientapp()
