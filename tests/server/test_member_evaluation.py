"""Each member's scores of the global model on its own validation split: what its reply
says, what its policy keeps back, and how the coordinator writes them per member."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from flwr.app import Message, MetricRecord, RecordDict
from flwr.serverapp.strategy.strategy_utils import aggregate_metricrecords

from fractofl.client.member import member_evaluation
from fractofl.client.policy import allowed_metrics, load_policy
from fractofl.core.learning.training import EvalResult
from fractofl.core.wire.compression import CompressionSpec
from fractofl.core.wire.member_evaluation import (
    CLASS_COUNT_KEY,
    evaluation_metrics,
    read_evaluation,
)
from fractofl.server.member_evaluation import (
    append_member_evaluations,
    evaluations_of,
    read_member_evaluations,
)
from fractofl.server.recorder import RoundRecorder
from fractofl.server.rounds import _shared_metrics_only
from fractofl.strategies.registry import CommonStrategyArgs, build_strategy
from tests.strategies.flower_grid import grid_with_nodes

CLASSES = ["fatigue", "ductile", "brittle"]


def _result(confusion: list[list[int]]) -> EvalResult:
    matrix = np.array(confusion, dtype=np.int64)
    correct, total = int(np.trace(matrix)), int(matrix.sum())
    return EvalResult(0.5, correct / total, 0.4, matrix, total)


def _replies(metrics: list[dict[str, object]]) -> list[Message]:
    _, nodes = grid_with_nodes(len(metrics))
    replies = []
    for node, values in zip(nodes, metrics, strict=True):
        instruction = Message(RecordDict(), dst_node_id=node, message_type="evaluate")
        instruction.metadata.__dict__["_message_id"] = instruction.object_id
        reply = Message(RecordDict({"metrics": MetricRecord(values)}), reply_to=instruction)
        reply.metadata.__dict__["_src_node_id"] = node
        replies.append(reply)
    return replies


def test_a_reply_carries_recall_and_images_per_class_and_none_for_an_absent_class() -> None:
    # Prepare: a member with 3 fatigue and 2 ductile validation images, no brittle one
    result = _result([[2, 1, 0], [0, 2, 0], [0, 0, 0]])
    # Execute: through a real MetricRecord, as it travels
    sent = MetricRecord(evaluation_metrics(member_evaluation(result), len(CLASSES), 4))
    read = read_evaluation(sent, len(CLASSES))
    # Assert
    assert read.examples == 5 and read.accuracy == 0.8 and read.partition == 4
    assert read.recall is not None and read.recall[2] is None
    assert read.recall[:2] == (2 / 3, 1.0)
    assert read.counts == (3, 2, 0)


def test_a_member_without_a_validation_split_reports_no_scores_rather_than_zeros() -> None:
    # Execute
    read = read_evaluation(MetricRecord(evaluation_metrics(None, len(CLASSES), None)), 3)
    # Assert
    assert (read.examples, read.accuracy, read.macro_f1, read.partition) == (0, None, None, None)
    assert read.recall == (None, None, None)


def test_a_policy_that_withholds_counts_keeps_them_from_leaving_and_the_mean_still_works(
    tmp_path: Path,
) -> None:
    # Prepare: two members; the second one's policy withholds its images per class
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text("share_class_counts: false\n")
    policy = load_policy(policy_file)
    first = evaluation_metrics(member_evaluation(_result([[3, 0, 0], [1, 2, 0], [0, 0, 1]])), 3, 0)
    second = evaluation_metrics(member_evaluation(_result([[1, 0, 0], [0, 1, 0], [0, 1, 2]])), 3, 1)
    withheld = allowed_metrics(policy, second)
    replies = _replies([first, withheld])
    recorded = evaluations_of(replies, len(CLASSES))  # what the coordinator writes
    common = CommonStrategyArgs(1.0, 1.0, 1, 1, 1, aggregate_metricrecords, aggregate_metricrecords)
    strategy = build_strategy("fedavg", common, {}, CompressionSpec("none"), 5.0)
    # Execute: Flower's mean refuses replies whose keys differ; the coordinator keeps the
    # keys every reply has
    _shared_metrics_only(replies)
    mean = strategy.aggregate_evaluate(1, replies)
    # Assert
    assert CLASS_COUNT_KEY in first and CLASS_COUNT_KEY not in withheld
    assert [found.counts for _, found in recorded] == [(3, 3, 1), None]
    assert recorded[1][1].recall == (1.0, 1.0, 2 / 3)  # recall leaves either way
    assert mean is not None and mean["val-accuracy"] == (6 / 7 * 7 + 4 / 5 * 5) / 12


def test_the_round_mean_keeps_no_per_class_or_partition_numbers() -> None:
    # Prepare
    recorder = RoundRecorder(lambda arrays: _result([[1]]), lambda row, result: None, 0)
    replies = _replies(
        [
            evaluation_metrics(member_evaluation(_result([[2, 0, 0], [0, 1, 1], [0, 0, 1]])), 3, 0),
            evaluation_metrics(member_evaluation(_result([[1, 1, 0], [0, 1, 0], [0, 0, 1]])), 3, 1),
        ]
    )
    # Execute
    mean = recorder.aggregate_evaluate_metrics([r.content for r in replies], "num-examples")
    # Assert: the mean of the scores, weighted by images; nothing per class
    assert set(mean) == {"val-loss", "val-accuracy", "val-macro-f1"}
    assert mean["val-accuracy"] == (4 + 3) / 9


def test_the_file_names_registered_members_and_leaves_withheld_cells_blank(
    tmp_path: Path,
) -> None:
    # Prepare: a registered member with counts, a simulated one that withheld them
    result = _result([[2, 1, 0], [0, 2, 0], [0, 0, 0]])
    replies = _replies(
        [
            evaluation_metrics(member_evaluation(result), 3, None),
            {
                k: v
                for k, v in evaluation_metrics(member_evaluation(result), 3, 2).items()
                if k != CLASS_COUNT_KEY
            },
        ]
    )
    found = evaluations_of(replies, len(CLASSES))
    names = {found[0][0]: "org-alpha"}
    path = tmp_path / "member_eval.csv"
    # Execute: two rounds
    append_member_evaluations(path, CLASSES, 1, found, names)
    append_member_evaluations(path, CLASSES, 2, found, names)
    rows = read_member_evaluations(path)
    # Assert
    assert [(r["round"], r["member"]) for r in rows] == [
        ("1", "org-alpha"),
        ("1", "partition-2"),
        ("2", "org-alpha"),
        ("2", "partition-2"),
    ]
    assert rows[0]["images_fatigue"] == "3" and rows[0]["recall_brittle"] == ""
    assert rows[1]["images_fatigue"] == "" and rows[1]["recall_fatigue"] == "0.666667"
    assert rows[0]["val_accuracy"] == "0.8" and rows[0]["node_id"] == str(found[0][0])
