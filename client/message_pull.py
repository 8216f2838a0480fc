"""The ClientApp's pull of its instruction, retried sooner than Flower retries it.

Flower 1.42's SuperNode has its ClientApp started as soon as an instruction's header has
arrived, while the SuperNode is still downloading the instruction's arrays from the
SuperLink (a ResNet-18 model: 45 MB, seconds). The ClientApp's pull of an array that is
not there yet is retried after 1 s, 2 s, 4 s, 8 s and then every 10 s: measured on
member-sized work (bench part ``members``), a member typically began training 1 to 8 s
after its instruction was complete. Retrying every ``RETRY_FIRST_S`` growing to
``RETRY_CAP_S`` keeps that wait under a second; the pull's overall limit stays Flower's
(``PULL_MAX_TIME``), with no limit on the number of retries, so a slow download is never
cut short because it was asked about more often.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

RETRY_FIRST_S = 0.1
RETRY_CAP_S = 1.0


def retried_sooner(pull: Callable[..., Any]) -> functools.partial[Any]:
    """``pull`` (Flower's ``pull_objects``, or a step that passes its backoff arguments on)
    retrying a missing array from ``RETRY_FIRST_S`` up to ``RETRY_CAP_S``, within Flower's
    overall limit and with no limit on the number of retries."""
    return functools.partial(
        pull, initial_backoff=RETRY_FIRST_S, backoff_cap=RETRY_CAP_S, max_tries_per_object=None
    )


def pull_sooner() -> bool:
    """Have Flower's ClientApp runtime (this process's) retry an array that is not
    available yet sooner; whether its runtime had the step to change (flwr 1.42's)."""
    from flwr.supernode.runtime import run_clientapp as runtime

    pull: Any = getattr(runtime, "pull_and_inflate_object_from_tree", None)
    if not callable(pull) or isinstance(pull, functools.partial):
        return False
    runtime.pull_and_inflate_object_from_tree = retried_sooner(pull)  # type: ignore[assignment]
    return True
