"""What the coordinator tells members about the update they send back.

The coordinator's train config carries the compression to apply; members reply with the
compressed change of the weights (see :mod:`fractofl.core.wire.compression`).
"""

from __future__ import annotations

from collections.abc import Mapping

from fractofl.core.wire.compression import CompressionSpec

ARRAYS_KEY = "arrays"  # Flower's Message-API strategies' record names
CONFIG_KEY = "config"
METRICS_KEY = "metrics"
SERVER_ROUND_KEY = "server-round"
EXAMPLES_KEY = "num-examples"  # the metric FedAvg weighs updates by
COMPRESSION_MODE_KEY = "compression-mode"
COMPRESSION_TOPK_KEY = "compression-topk"
LEARNING_RATE_KEY = "learning-rate"  # the round's rate under train.lr_schedule
PROXIMAL_MU_KEY = "proximal-mu"  # set by Flower's FedProx
CLIPPING_NORM_KEY = "clipping_norm"  # set under differential privacy (Flower's key)
UNIT_WEIGHT_KEY = "dp-unit-weight"
CONFIG_CRC_KEY = "config-crc"  # CRC-32 of the run configuration a member trained with
# The identity (labelled.folder_identity) of the reference set a member trained with; sent
# only by a member that has one (data.reference_dir, `member join --reference`)
REFERENCE_SET_KEY = "reference-set"
# federation.evaluate_with_training: a training instruction with this config key set asks the
# member to score the model it received (the previous round's global model) on its
# validation split first; the scores travel in the training reply under EVALUATION_KEY.
EVALUATE_RECEIVED_KEY = "evaluate-received"
EVALUATION_KEY = "evaluation"
# Cross-site evaluation (federation.cross_site): a member personalizes the final global
# model and sends it; then every model is scored on every member's validation split.
PERSONALIZE_MESSAGE = "train.personalize"
CROSS_SITE_MESSAGE = "evaluate.cross_site"
# How a member's error reply says that the member refused the instruction (its privacy
# policy, its code gate), as opposed to failing: the coordinator records those as refusals.
POLICY_REFUSAL = "member policy"
CODE_REFUSAL = "member code gate:"


def is_member_refusal(reason: str) -> bool:
    """Whether an error reply's reason is the member refusing, not failing."""
    return reason.startswith(f"{POLICY_REFUSAL} ") or CODE_REFUSAL in reason


"""Under differential privacy every member reports this metric as 1 and the mean is
weighted by it: one member's influence is then bounded whatever its data set's size."""


def spec_from_config(config: Mapping[str, object]) -> CompressionSpec:
    """The compression a member must apply, as the coordinator's train config says."""
    topk = config.get(COMPRESSION_TOPK_KEY, 1.0)
    return CompressionSpec(
        mode=str(config.get(COMPRESSION_MODE_KEY, "none")),
        topk_fraction=float(topk) if isinstance(topk, int | float) else 1.0,
    )


def spec_to_config(spec: CompressionSpec) -> dict[str, str | float]:
    """The train-config entries that make members apply ``spec``."""
    return {COMPRESSION_MODE_KEY: spec.mode, COMPRESSION_TOPK_KEY: spec.topk_fraction}
