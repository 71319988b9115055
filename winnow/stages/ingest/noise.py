"""Synthetic label noise and class imbalance, for experiments where the truth must be known.

Every injected flip really changes the label (unlike the L2RW/Meta-Weight-Net reference codes,
whose "uniform" noise may redraw the true class, so that their "40%" changes about 36%).
"""

from __future__ import annotations

import numpy as np

NOISE_KINDS = ("uniform", "pair", "background", "model")


def parse_noise(spec: str) -> tuple[str, float, int]:
    """Parse ``uniform:0.4``, ``pair:0.4``, ``background:0.4[:CLASS]`` or ``model:0.4`` into (kind, rate, class)."""
    parts = spec.split(":")
    if len(parts) not in (2, 3) or parts[0] not in NOISE_KINDS:
        raise ValueError(
            f"--inject-noise {spec!r}: expected KIND:RATE with KIND one of {', '.join(NOISE_KINDS)} "
            "(e.g. uniform:0.4, pair:0.4, background:0.4:0, model:0.4)"
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


MODEL_NOISE_DIMS = 64  # inputs are reduced to this many principal components before the model is fit


def model_noise(
    x: np.ndarray, labels: np.ndarray, candidates: np.ndarray, *, rate: float, num_classes: int,
    rng: np.random.Generator, folds: int = 2,
) -> np.ndarray:
    """Instance-dependent noise, as people make it: confusable rows get a confusable label.

    A classifier fit on the other rows (``folds``-fold cross-fitting over the candidates: a
    multinomial logistic regression on the first :data:`MODEL_NOISE_DIMS` principal components of
    the standardised ``x``) gives each candidate row the probability of its most likely *wrong*
    class; the ``round(rate * len(candidates))`` rows where that is highest take that class.
    This is the recipe of seed 000 (a trained network's predictions as the noisy labels),
    restricted to its mistakes so that exactly the asked share of labels changes.

    Parameters
    ----------
    x : (n, d) float features of every row (pixels or an embedding); NaN rows are never chosen.
    labels : (n,) int clean labels.
    candidates : indices of the rows that may be corrupted (the usable train rows).
    """
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    if num_classes < 2:
        raise ValueError("label noise needs at least two classes")
    x = np.asarray(x, dtype=np.float64)
    ok = candidates[np.isfinite(x[candidates]).all(axis=1)]
    z = StandardScaler().fit_transform(x[ok])
    if z.shape[1] > MODEL_NOISE_DIMS:
        z = PCA(MODEL_NOISE_DIMS, random_state=int(rng.integers(2**31))).fit_transform(z)
    fold = rng.permutation(len(ok)) % folds
    wrong_p = np.zeros(len(ok))
    wrong_c = np.zeros(len(ok), dtype=np.int64)
    for f in range(folds):
        fit, held = fold != f, fold == f
        model = LogisticRegression(max_iter=300, C=1.0).fit(z[fit], labels[ok][fit])
        p = np.zeros((int(held.sum()), num_classes))
        p[:, model.classes_] = model.predict_proba(z[held])
        p[np.arange(len(p)), labels[ok][held]] = -1.0  # only wrong classes compete
        wrong_c[held], wrong_p[held] = p.argmax(axis=1), p.max(axis=1)
    m = min(int(round(rate * len(candidates))), len(ok))
    chosen = np.lexsort((ok, -wrong_p))[:m]  # ties by row order: reproducible
    noisy = labels.copy()
    noisy[ok[chosen]] = wrong_c[chosen]
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
