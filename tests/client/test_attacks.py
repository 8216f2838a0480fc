"""What a simulated Byzantine member sends instead of its update (client/attacks.py); the
real runs that the update guard screens are in tests/server/test_byzantine.py."""

from __future__ import annotations

import numpy as np
import pytest

from fractofl.client.attacks import attack_kinds, corrupt_update


def _delta() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "conv.weight": rng.normal(0, 0.1, (8, 3, 3, 3)).astype(np.float32),
        "fc.bias": rng.normal(0, 0.1, (4,)).astype(np.float32),
        "bn.running_var": np.ones(8, dtype=np.float32),
        "bn.num_batches_tracked": np.array(7, dtype=np.int64),
    }


def _norm(arrays: dict[str, np.ndarray], keys: list[str]) -> float:
    return float(np.sqrt(sum(np.sum(arrays[k].astype(np.float64) ** 2) for k in keys)))


WEIGHTS = ["conv.weight", "fc.bias"]
KEEP = frozenset({"bn.running_var"})


def test_noise_has_scale_times_the_honest_norm_and_leaves_kept_tensors_alone() -> None:
    delta = _delta()
    sent = corrupt_update(delta, "noise", 10.0, np.random.default_rng(1), keep=KEEP)
    # the guard's norm test sees about 10 x the honest norm (Gaussian, 220 values)
    assert _norm(sent, WEIGHTS) == pytest.approx(10 * _norm(delta, WEIGHTS), rel=0.15)
    assert not np.allclose(sent["conv.weight"], delta["conv.weight"])
    assert sent["bn.running_var"] is delta["bn.running_var"]
    assert sent["bn.num_batches_tracked"] is delta["bn.num_batches_tracked"]
    assert all(sent[k].dtype == np.float32 for k in WEIGHTS)


def test_sign_flip_and_nan_send_what_they_say() -> None:
    delta = _delta()
    flipped = corrupt_update(delta, "sign_flip", 10.0, np.random.default_rng(1), keep=KEEP)
    assert all(np.array_equal(flipped[k], -10 * delta[k]) for k in WEIGHTS)
    poisoned = corrupt_update(delta, "nan", 10.0, np.random.default_rng(1), keep=KEEP)
    assert np.isnan(poisoned["conv.weight"].flat[0])
    assert np.isnan(poisoned["conv.weight"]).sum() == 1
    assert not np.isnan(delta["conv.weight"]).any()  # the honest update is untouched


def test_an_unknown_attack_names_the_setting() -> None:
    with pytest.raises(ValueError, match=r"federation\.attack='flood'; valid: none, sign_flip"):
        corrupt_update(_delta(), "flood", 10.0, np.random.default_rng(1))


def test_one_attack_is_every_attackers_and_a_list_gives_each_its_own() -> None:
    assert attack_kinds("sign_flip", 3) == ("sign_flip",) * 3
    assert attack_kinds("none", 0) == ()
    assert attack_kinds("sign_flip, nan", 2) == ("sign_flip", "nan")
    with pytest.raises(ValueError, match=r"names 3 attacks for federation.attackers=2"):
        attack_kinds("sign_flip,nan,noise", 2)
    with pytest.raises(ValueError, match=r"unknown 'flood'; valid: none, sign_flip, noise, nan"):
        attack_kinds("sign_flip,flood", 2)
