"""Synthetic label noise and class imbalance, for experiments where the truth must be known.

Every injected flip really changes the label (unlike the L2RW/Meta-Weight-Net reference codes,
whose "uniform" noise may redraw the true class, so that their "40%" changes about 36%).
"""

from __future__ import annotations

import numpy as np

NOISE_KINDS = ("uniform", "pair", "background")


def parse_noise(spec: str) -> tuple[str, float, int]:
    """Parse ``uniform:0.4``, ``pair:0.4`` or ``background:0.4[:CLASS]`` into (kind, rate, class)."""
    parts = spec.split(":")
    if len(parts) not in (2, 3) or parts[0] not in NOISE_KINDS:
        raise ValueError(
            f"--inject-noise {spec!r}: expected KIND:RATE with KIND one of {', '.join(NOISE_KINDS)} "
            "(e.g. uniform:0.4, pair:0.4, background:0.4:0)"
        )
    try:
        rate = float(parts[1])
        background = int(parts[2]) if len(parts) == 3 else 0
    except ValueError as exc:
        raise ValueError(f"--inject-noise {spec!r}: RATE must be a number and CLASS an integer") from exc
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"--inject-noise {spec!r}: RATE must be in [0, 1]")
    if len(parts) == 3 and parts[0] != "background":
        raise ValueError(f"--inject-noise {spec!r}: only background noise takes a CLASS")
    return parts[0], rate, background


def inject_noise(
    labels: np.ndarray, candidates: np.ndarray, *, kind: str, rate: float, num_classes: int,
    background: int = 0, rng: np.random.Generator,
) -> np.ndarray:
    """Return a copy of ``labels`` in which ``round(rate * len(candidates))`` of the candidate rows
    are flipped to another class.

    Parameters
    ----------
    labels : (n,) int array of clean labels.
    candidates : indices of the rows that may be corrupted (the usable train rows).
    kind : ``uniform`` (any other class, uniformly), ``pair`` (class c -> c+1 mod C) or
        ``background`` (every flipped row goes to class ``background``; rows already of that
        class are never chosen, and at most all other rows flip).
    """
    if num_classes < 2:
        raise ValueError("label noise needs at least two classes")
    if kind == "background" and not 0 <= background < num_classes:
        raise ValueError(f"background class {background} is not a class index (0..{num_classes - 1})")
    noisy = labels.copy()
    pool = candidates[labels[candidates] != background] if kind == "background" else candidates
    m = min(int(round(rate * len(candidates))), len(pool))
    chosen = np.sort(rng.choice(pool, size=m, replace=False))
    if kind == "uniform":
        noisy[chosen] = (labels[chosen] + rng.integers(1, num_classes, size=m)) % num_classes
    elif kind == "pair":
        noisy[chosen] = (labels[chosen] + 1) % num_classes
    else:
        noisy[chosen] = background
    return noisy


def imbalance_keep(
    labels: np.ndarray, candidates: np.ndarray, *, factor: float, num_classes: int, rng: np.random.Generator
) -> np.ndarray:
    """Indices of ``candidates`` to keep so that class c has ``n_max * factor**(-c / (C-1))`` rows,
    the exponential long-tail profile of the Meta-Weight-Net paper (class 0 is the head)."""
    if factor < 1:
        raise ValueError(f"--imbalance {factor}: must be >= 1 (max/min class ratio)")
    per_class = [candidates[labels[candidates] == c] for c in range(num_classes)]
    n_max = max((len(p) for p in per_class), default=0)
    keep = []
    for c, rows in enumerate(per_class):
        target = int(round(n_max * factor ** (-c / max(num_classes - 1, 1))))
        keep.append(rng.permutation(rows)[: max(min(target, len(rows)), 1 if len(rows) else 0)])
    return np.sort(np.concatenate(keep)) if keep else candidates[:0]
