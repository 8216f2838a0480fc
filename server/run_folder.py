"""The run folder: resolved config, metrics per round, plots and the final model."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import math
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import yaml
from flwr.app import Message
from torch import nn

from fractofl.core.config.run_config import RunConfig, config_digest, from_nested
from fractofl.core.files.atomic import atomic_write_bytes, remove_stale_temporaries
from fractofl.core.learning.training import EvalResult
from fractofl.core.model.checkpoint import save_checkpoint
from fractofl.core.model.factory import checkpoint_for
from fractofl.core.wire.update_protocol import is_member_refusal
from fractofl.server.cross_site import (
    CROSS_SITE_FILE,
    CrossSiteCell,
    cross_site_table,
    read_cross_site,
    write_cross_site,
)
from fractofl.server.errors import RunFolderError, refuse_used_run_folder
from fractofl.server.member_evaluation import (
    MEMBER_EVAL_FILE,
    append_member_evaluations,
    evaluations_of,
    member_label,
)
from fractofl.server.recorder import RoundRow
from fractofl.server.reporting import (
    ACCURACY_PLOT,
    CONFUSION_PLOT,
    METRICS_FILE,
    format_summary,
    write_metrics,
)
from fractofl.server.rounds import Participation
from fractofl.strategies.guard import UpdateVerdict

log = logging.getLogger("fractofl")

CONFIG_FILE = "config.yaml"
MODEL_FILE = "model.pt"
SUMMARY_FILE = "summary.json"
UPDATES_FILE = "updates.csv"
MEMBERS_FILE = "members.csv"
MEMBERS_COLUMNS = ["round", "attempt", "node_id", "member", "status", "detail"]


class RunFolder:
    """Writes one run's artifacts under ``path``."""

    def __init__(self, path: Path, cfg: RunConfig, run_id: str, kind: str) -> None:
        self.path = path
        self.cfg = cfg
        self.run_id = run_id
        self.kind = kind
        self.member_names: dict[int, str] = {}
        self.member_labels: dict[int, str] = {}
        """Node id -> the member's name in member_eval.csv, as its evaluations named it."""
        """Node id -> registered name (a real federation), for members.csv."""

    @classmethod
    def create(cls, cfg: RunConfig, run_id: str, kind: str) -> RunFolder:
        """Make the folder ``output.root/output.name`` (a timestamped name by default)."""
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        name = cfg.output.name or f"{kind}-{stamp}-{run_id}"
        path = Path(cfg.output.root) / name
        refuse_used_run_folder(path)
        path.mkdir(parents=True, exist_ok=True)
        folder = cls(path, cfg, run_id, kind)
        (path / CONFIG_FILE).write_text(yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False))
        return folder

    @classmethod
    def reopen(cls, cfg: RunConfig, run_id: str, kind: str) -> RunFolder:
        """The existing folder ``output.root/output.name`` of a run to resume; refuses a
        folder whose recorded configuration trains something else."""
        path = Path(cfg.output.root) / cfg.output.name
        config_path = path / CONFIG_FILE
        if not config_path.is_file():
            raise RunFolderError(f"{path} holds no run to resume ({CONFIG_FILE} is missing)")
        recorded = from_nested(yaml.safe_load(config_path.read_text()))
        if config_digest(recorded) != config_digest(cfg):
            raise RunFolderError(
                f"{config_path} records another configuration (digest "
                f"{config_digest(recorded)}, now {config_digest(cfg)}); resume with the "
                "run's own configuration: `fractofl coordinator resume RUN_DIR`"
            )
        removed = remove_stale_temporaries(path)
        if removed:
            log.info("removed %d file(s) half-written when the run stopped", len(removed))
        return cls(path, cfg, run_id, kind)

    def rewind(self, rows: Sequence[RoundRow]) -> None:
        """Make the folder's files describe exactly the checkpointed rounds ``rows``:
        lines of rounds that were under way when the run stopped are dropped."""
        last = rows[-1].round if rows else -1
        write_metrics(rows, self.path / METRICS_FILE)
        for name in (UPDATES_FILE, MEMBERS_FILE, MEMBER_EVAL_FILE):
            path = self.path / name
            if not path.is_file():
                continue
            with open(path, newline="") as handle:
                lines = list(csv.reader(handle))
            kept = [lines[0]] + [line for line in lines[1:] if line and int(line[0]) <= last]
            buffer = io.StringIO()
            csv.writer(buffer).writerows(kept)
            atomic_write_bytes(path, buffer.getvalue().encode())

    def record_participation(self, seen: Participation) -> None:
        """Append who answered, refused (its policy or code gate), failed or did not answer
        in time (members.csv), per attempt."""
        events = [
            (node, "refused" if is_member_refusal(reason) else "failed", reason)
            for node, reason in seen.failed.items()
        ]
        events += [
            (node, "straggler", "no reply before the round timeout") for node in seen.stragglers
        ]
        events += [(node, "answered", "") for node in seen.answered]
        path = self.path / MEMBERS_FILE
        new = not path.exists()
        with open(path, "a", newline="") as handle:
            writer = csv.writer(handle)
            if new:
                writer.writerow(MEMBERS_COLUMNS)
            for node, status, detail in sorted(events):
                name = self.member_names.get(node, "")
                writer.writerow([seen.round, seen.attempts, node, name, status, detail])

    def known_names(self) -> dict[int, str]:
        """Node id -> the member's name as known now: registered, else as its evaluations
        named it (``partition-N`` in a simulation)."""
        return {**self.member_labels, **self.member_names}

    def record_member_evaluations(self, server_round: int, replies: list[Message]) -> None:
        """Append each member's scores of round ``server_round``'s global model on its own
        validation split (member_eval.csv)."""
        classes = self.cfg.data.classes
        evaluations = evaluations_of(replies, len(classes))
        path = self.path / MEMBER_EVAL_FILE
        append_member_evaluations(path, classes, server_round, evaluations, self.member_names)
        for node, found in evaluations:
            self.member_labels[node] = member_label(node, self.member_names, found.partition)

    def record_cross_site(self, cells: Sequence[CrossSiteCell]) -> None:
        """Write the end-of-run cross-site matrix (cross_site.csv) and log it."""
        path = self.path / CROSS_SITE_FILE
        write_cross_site(path, cells)
        log.info(
            "cross-site evaluation (%s), validation accuracy:\n%s",
            path,
            cross_site_table(read_cross_site(path)),
        )

    def record_round(self, rows: Sequence[RoundRow], row: RoundRow) -> None:
        """Rewrite the metrics file with ``rows`` (``row`` is the newest)."""
        write_metrics(rows, self.path / METRICS_FILE)

    def record_updates(self, server_round: int, verdicts: list[UpdateVerdict]) -> None:
        """Append one line per member update: bytes sent, accepted or refused and why."""
        path = self.path / UPDATES_FILE
        new = not path.exists()
        with open(path, "a", newline="") as handle:
            writer = csv.writer(handle)
            if new:
                writer.writerow(["round", "node_id", "bytes_sent", "accepted", "norm", "reason"])
            for v in verdicts:
                writer.writerow(
                    [
                        server_round,
                        v.node_id,
                        v.bytes_sent,
                        int(v.accepted),
                        f"{v.norm:.6g}",
                        v.reason,
                    ]
                )

    def finish(self, model: nn.Module, rows: Sequence[RoundRow], last: EvalResult) -> Path:
        """Write the final checkpoint, the plots and a JSON summary; return the model path."""
        from fractofl.server.plots import plot_accuracy, plot_confusion

        final = rows[-1]
        metrics = final.test_metrics()
        checkpoint = checkpoint_for(self.cfg, model.state_dict(), final.round, self.run_id, metrics)
        model_path = save_checkpoint(checkpoint, self.path / MODEL_FILE)
        title = f"{self.kind} {self.cfg.model.name} ({self.cfg.strategy.name})"
        if self.kind == "centralized":
            title = f"centralized {self.cfg.model.name}"
        plot_accuracy(rows, self.path / ACCURACY_PLOT, title)
        plot_confusion(
            last.confusion,
            self.cfg.data.classes,
            self.path / CONFUSION_PLOT,
            f"round {final.round}: accuracy {final.test_accuracy:.3f}",
        )
        summary = {
            "kind": self.kind,
            "run_id": self.run_id,
            "config_digest": config_digest(self.cfg),
            "rounds": final.round,
            "final": {k: (None if math.isnan(v) else v) for k, v in metrics.items()},
            "best_test_accuracy": max(r.test_accuracy for r in rows),
            "confusion_matrix": last.confusion.tolist(),
            "classes": list(self.cfg.data.classes),
            "elapsed_s": final.elapsed_s,
        }
        if not math.isnan(final.dp_epsilon):
            summary["privacy"] = {
                "epsilon": final.dp_epsilon,
                "delta": final.dp_delta,
                "noise_multiplier": self.cfg.privacy.noise_multiplier,
                "clipping_norm": self.cfg.privacy.clipping_norm,
                "accountant": "Flower RdpAccountant, no amplification by sampling",
            }
        if self.cfg.privacy.secure_aggregation:
            privacy = self.cfg.privacy
            summary["secure_aggregation"] = {
                "protocol": "Flower SecAgg+",
                "num_shares": privacy.secagg_num_shares,
                "reconstruction_threshold": privacy.secagg_reconstruction_threshold,
                "clipping_range": privacy.secagg_clipping_range,
                "quantization_range": privacy.secagg_quantization_range,
                "max_weight": privacy.secagg_max_weight,
            }
        (self.path / SUMMARY_FILE).write_text(json.dumps(summary, indent=2))
        log.info("%s run finished; run folder %s\n%s", self.kind, self.path, format_summary(rows))
        return model_path
