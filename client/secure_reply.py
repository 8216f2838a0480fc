"""The member's side of secure aggregation (``privacy.secure_aggregation``).

Flower's ``secaggplus_mod`` runs the SecAgg+ stages on the member and masks the update
before it leaves. It reads instructions and replies in Flower's legacy layout
(``FitIns``/``FitRes``): this module converts between that layout and the model's named
arrays. A train reply in the newer layout would make every round halt with the model
unchanged (see ``flower-notes.md``), so both directions live here, next to each other.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np
import torch
from flwr.app import Context, Message
from flwr.client.mod import secaggplus_mod
from flwr.clientapp.typing import ClientAppCallable
from flwr.common import (
    Code,
    FitRes,
    Scalar,
    Status,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS
from flwr.compat.common.recorddict_compat import fitres_to_recorddict, recorddict_to_fitins

from fractofl.core.config.run_config import PrivacyConfig

log = logging.getLogger("fractofl")

FITINS_PARAMETERS = "fitins.parameters"


def secure_aggregation_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Flower's ``secaggplus_mod`` for SecAgg+ messages; other messages pass unchanged,
    so one ClientApp serves runs with and without secure aggregation."""
    if RECORD_KEY_CONFIGS in msg.content.config_records:
        return secaggplus_mod(msg, context, call_next)
    return call_next(msg, context)


def is_secure_instruction(msg: Message) -> bool:
    """Whether a train message comes from SecAgg+ (legacy ``FitIns`` layout)."""
    return FITINS_PARAMETERS in msg.content.array_records


def read_instruction(
    msg: Message, keys: list[str]
) -> tuple[dict[str, torch.Tensor], Mapping[str, Scalar]]:
    """The global model (named like ``keys``, the model's state-dict order) and the
    round's config from a SecAgg+ train message."""
    fitins = recorddict_to_fitins(msg.content, keep_input=True)
    arrays = parameters_to_ndarrays(fitins.parameters)
    if len(arrays) != len(keys):
        raise ValueError(
            f"the coordinator sent {len(arrays)} arrays, this member's model has {len(keys)}: "
            "member and coordinator must run the same model.* config"
        )
    state = {
        key: torch.from_numpy(np.array(array)) for key, array in zip(keys, arrays, strict=True)
    }
    return state, fitins.config


def secure_reply(
    msg: Message,
    delta: Mapping[str, np.ndarray],
    examples: int,
    metrics: Mapping[str, Scalar],
    privacy: PrivacyConfig,
) -> Message:
    """The reply ``secaggplus_mod`` masks: the change of every array in state-dict order
    (integer buffers' changes zeroed: a mean of counters means nothing; scalars as
    1-element vectors), the number of training images it weighs by, and the metrics,
    which travel unmasked."""
    # Flower's unmasking leaves 0-d arrays unscaled (its in-place fix-up rebinds a numpy
    # scalar), so scalars travel as 1-element vectors; the coordinator restores shapes.
    values = [
        np.atleast_1d(value if np.issubdtype(value.dtype, np.floating) else np.zeros_like(value))
        for value in delta.values()
    ]
    _warn_if_clipped(values, examples, privacy)
    fitres = FitRes(
        status=Status(code=Code.OK, message=""),
        parameters=ndarrays_to_parameters(values),
        num_examples=examples,
        metrics=dict(metrics),
    )
    return Message(fitres_to_recorddict(fitres, keep_input=False), reply_to=msg)


def _warn_if_clipped(values: list[np.ndarray], examples: int, privacy: PrivacyConfig) -> None:
    """SecAgg+ scales the update by ``examples / secagg_max_weight`` and clips it to
    ``secagg_clipping_range`` without a word: say so on the member when it happens."""
    ratio = examples / privacy.secagg_max_weight
    limit = privacy.secagg_clipping_range / ratio
    clipped = sum(int(np.count_nonzero(np.abs(value) > limit)) for value in values)
    if clipped:
        log.warning(
            "secure aggregation clips %d value(s) of this member's update (%d images / "
            "privacy.secagg_max_weight=%g, times values above %.4g, exceed "
            "privacy.secagg_clipping_range=%g): raise secagg_max_weight or secagg_clipping_range",
            clipped,
            examples,
            privacy.secagg_max_weight,
            limit,
            privacy.secagg_clipping_range,
        )
