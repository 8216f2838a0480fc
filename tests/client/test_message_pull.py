"""The ClientApp retries an array that is not at its SuperNode yet sooner than Flower
does, through Flower's own runtime, and still inflates the instruction it pulled."""

from __future__ import annotations

import functools
from collections import Counter

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, Message, RecordDict
from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects, get_object_tree
from flwr.supercore.inflatable.inflatable_utils import ObjectUnavailableError
from flwr.supercore.task_identity import TaskIdentity
from flwr.supernode.runtime import run_clientapp as runtime

from fractofl.client.message_pull import RETRY_CAP_S, RETRY_FIRST_S, pull_sooner

UNAVAILABLE_TRIES = 4  # Flower's own retries would wait 15 s for each object, these 1.5 s


@pytest.fixture
def restored_runtime(monkeypatch: pytest.MonkeyPatch) -> None:
    """Put Flower's own pull back after the test (pull_sooner changes the module)."""
    name = "pull_and_inflate_object_from_tree"
    monkeypatch.setattr(runtime, name, getattr(runtime, name))


@pytest.mark.usefixtures("restored_runtime")
def test_the_runtimes_pull_retries_sooner_without_a_try_limit() -> None:
    # Execute
    changed, again = pull_sooner(), pull_sooner()
    # Assert: the name Flower's pull_task_input calls is the changed pull, changed once
    pull = runtime.pull_task_input.__globals__["pull_and_inflate_object_from_tree"]
    assert changed and not again
    assert isinstance(pull, functools.partial) and not isinstance(pull.func, functools.partial)
    assert pull.keywords == {
        "initial_backoff": RETRY_FIRST_S,
        "backoff_cap": RETRY_CAP_S,
        "max_tries_per_object": None,
    }


@pytest.mark.usefixtures("restored_runtime")
def test_an_instruction_whose_arrays_arrive_late_is_pulled_whole(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Prepare: an instruction with two arrays; the SuperNode has none of its objects for
    # the first UNAVAILABLE_TRIES asks of each (it is still downloading them). A
    # ClientApp process knows its task before it pulls (Flower's pull_task_input).
    for field, value in (("_task_id", 3), ("_run_id", 7), ("_node_id", 1)):
        monkeypatch.setattr(TaskIdentity, field, value)
    weights = {"w": np.arange(12, dtype=np.float32).reshape(3, 4), "b": np.ones(4, np.float32)}
    sent = Message(
        RecordDict({"arrays": ArrayRecord({k: Array(v) for k, v in weights.items()})}),
        dst_node_id=1,
        message_type="train",
    )
    contents = {oid: obj.deflate() for oid, obj in get_all_nested_objects(sent).items()}
    asked: Counter[str] = Counter()
    confirmed: list[str] = []

    def pull_object(object_id: str) -> bytes:
        asked[object_id] += 1
        if asked[object_id] <= UNAVAILABLE_TRIES:
            raise ObjectUnavailableError(object_id)
        return contents[object_id]

    pull_sooner()
    # Execute
    received = runtime.pull_and_inflate_object_from_tree(
        get_object_tree(sent), pull_object, confirmed.append, return_type=Message
    )
    # Assert: every object asked for until it came, the arrays as sent
    assert set(asked.values()) == {UNAVAILABLE_TRIES + 1} and set(asked) == set(contents)
    assert confirmed == [sent.object_id]
    arrays = received.content.array_records["arrays"]
    for name, value in weights.items():
        np.testing.assert_array_equal(arrays[name].numpy(), value)
