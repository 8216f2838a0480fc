"""The values of the ``train.*`` settings that name a choice, apart from the code that
acts on them, so that checking a configuration (every ``fractofl`` command) needs no
torch."""

from __future__ import annotations

# train.loss (fractofl.core.learning.loss)
CROSS_ENTROPY = "cross_entropy"
BALANCED_SOFTMAX = "balanced_softmax"
TRAINING_LOSSES = (CROSS_ENTROPY, BALANCED_SOFTMAX)

# train.mixed_precision (fractofl.core.learning.precision)
MIXED_PRECISION = ("auto", "off", "float16", "bfloat16")

# train.personalize_layers (fractofl.client.personal.local_models): the final linear
# layer only (the default), or the whole network with its BatchNorm statistics
CLASSIFIER_LAYER = "classifier"
ALL_LAYERS = "all"
PERSONALIZE_LAYERS = (CLASSIFIER_LAYER, ALL_LAYERS)
