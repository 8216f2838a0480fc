"""Simulated Byzantine members: corrupt an update, for robustness experiments.

Only a *simulated* member (one with a ``partition-id``) whose partition is below
``federation.attackers`` ever calls :func:`corrupt_update`; a real member never does.
``federation.attack`` names one attack for all of them, or one per attacker in partition
order (``sign_flip,nan``: partition 0 flips, partition 1 sends NaN).
"""

from __future__ import annotations

import numpy as np

ATTACKS = ("none", "sign_flip", "noise", "nan")


def attack_kinds(attack: str, attackers: int) -> tuple[str, ...]:
    """Each attacker's attack, in partition order, from ``federation.attack``.

    Raises ValueError naming the setting when a kind is unknown or a list's length is
    not ``attackers``.
    """
    kinds = tuple(part.strip() for part in attack.split(","))
    unknown = [kind for kind in kinds if kind not in ATTACKS]
    if unknown:
        raise ValueError(
            f"federation.attack={attack!r}: unknown {', '.join(map(repr, unknown))}; valid: "
            f"{', '.join(ATTACKS)}, or a comma-separated list with one per attacker"
        )
    if len(kinds) == 1:
        return kinds * attackers
    if len(kinds) != attackers:
        raise ValueError(
            f"federation.attack={attack!r} names {len(kinds)} attacks for "
            f"federation.attackers={attackers}: give one attack for all, or one per attacker"
        )
    return kinds


def corrupt_update(
    delta: dict[str, np.ndarray],
    attack: str,
    scale: float,
    rng: np.random.Generator,
    keep: frozenset[str] = frozenset(),
) -> dict[str, np.ndarray]:
    """The update an attacker sends instead of its honest ``delta``.

    ``sign_flip`` sends ``-scale * delta``; ``noise`` sends Gaussian noise whose norm is
    ``scale`` times the honest update's; ``nan`` sends the honest update with NaN in its
    first floating-point tensor. Tensors named in ``keep`` (running statistics) are sent
    honestly, as an attacker that wants to pass validation would.
    """
    if attack not in ATTACKS:
        raise ValueError(f"federation.attack={attack!r}; valid: {', '.join(ATTACKS)}")
    floats = [k for k, v in delta.items() if np.issubdtype(v.dtype, np.floating) and k not in keep]
    out = dict(delta)
    if attack == "sign_flip":
        for key in floats:
            out[key] = (-scale * delta[key]).astype(np.float32)
    elif attack == "noise":
        honest = np.sqrt(sum(float(np.sum(delta[k] ** 2)) for k in floats))
        numel = sum(delta[k].size for k in floats)
        sigma = scale * honest / np.sqrt(max(numel, 1))
        for key in floats:
            out[key] = rng.normal(0.0, sigma, delta[key].shape).astype(np.float32)
    elif attack == "nan" and floats:
        poisoned = delta[floats[0]].copy()
        poisoned.flat[0] = np.nan
        out[floats[0]] = poisoned
    return out
