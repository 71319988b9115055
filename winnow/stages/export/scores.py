"""Noise scores and suggested labels from the signals the pipeline already has.

Definitions (n rows, C classes; only rows with ``split == "train"`` and no error get a score):

* **Trusted vote** ``v_i`` (C,): a class distribution from the *trusted* rows alone, by one of
  two models (``trusted_vote``; ``auto`` keeps the one whose posterior tells the trusted rows'
  labels from flips of them best, see :func:`choose_trusted_vote`):

  - ``knn``: the k nearest trusted rows of row i by cosine similarity of the embeddings (FAISS
    ``IndexFlatIP`` on L2-normalised vectors) vote for their labels with weight
    ``(1 + cos) / 2``; ``knn_smoothing`` pseudo-counts are spread evenly over the classes and the
    vote is normalised to sum to 1. A trusted row never votes for itself (leave-one-out).
  - ``linear``: a multinomial logistic regression fit on the trusted rows' standardised
    embeddings (:func:`trusted_linear_votes`); trusted rows get out-of-fold probabilities.

  Either way the vote is out-of-sample for every row, and it never saw a noisy label: the
  cross-fitted ``probs`` were trained on the noisy train labels and learn noise that depends on
  the image (confusable images given a confusable label), while a model of the trusted rows
  cannot (CIFAR-10, ``model:0.4``: AUROC 0.68 for the linear vote alone against 0.59 for probs).
* **Combined class posterior** ``q_i = (1 - b) * p_i + b * v_i`` with ``p_i`` the out-of-sample
  ``probs`` of the embed stage and ``b = knn_weight``, or, unset, the ``b`` of
  :func:`choose_trusted_vote` (the trusted rows tell how far to trust their vote); when one
  of the two is missing for a row the other is used alone. ``suggested_label = argmax q_i`` and
  ``suggested_confidence = max q_i``, both in range by construction.
* **Label signal** ``s_label = 1 - q_i[y_i]`` in [0, 1] (``y_i`` the given label): high when
  neither the model nor the trusted rows' vote believe the given label.
* **Meta signal** ``s_meta = (1 - r_i + z_i) / 2`` in [0, 1], with ``r_i`` the percentile rank
  (0 = lowest) of the aggregated meta weight among the scored rows and ``z_i`` the fraction of
  rounds in which the row's weight was zero (``1 - r_i`` alone without zero fractions). Ranks
  make the signal independent of each weighting method's scale.
* **noise_score** = ``(s_label + m * s_meta) / (1 + m)`` with ``m = meta_weight``, the average
  of the signals available for the row; it lies in [0, 1] and higher means more likely
  mislabelled. A row with no signal at all gets NaN (null in the tables).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field, replace

import faiss
import numpy as np
from scipy.stats import rankdata

from winnow.stages.common import schema
from winnow.stages.common.mapping import Map, map_in_process
from winnow.stages.export.calibrate import class_mix_weights
from winnow.stages.export.params import TRUSTED_VOTES


@dataclass
class NoiseScores:
    """Per-row outputs of :func:`noise_scores` (NaN / -1 where a row has none)."""

    score: np.ndarray  # (n,) float64 in [0, 1], NaN where not scored
    posterior: np.ndarray  # (n, C) float64 combined class posterior, NaN rows where none
    suggested_label: np.ndarray  # (n,) int64, -1 where no posterior
    suggested_confidence: np.ndarray  # (n,) float64 in [0, 1], NaN where no posterior
    label_signal: np.ndarray  # (n,) float64, NaN where no posterior or not scored
    meta_signal: np.ndarray  # (n,) float64, NaN where no weight or not scored
    signals: list[str] = field(default_factory=list)  # names of the signals used
    knn_weight_choice: dict = field(default_factory=dict)  # the b used, and how it was chosen


def trusted_knn_votes(
    embedding: np.ndarray,
    labels: np.ndarray,
    *,
    trusted: np.ndarray,
    query: np.ndarray,
    n_classes: int,
    k: int = 5,
    smoothing: float = 1.0,
    map_work: Map = map_in_process,
) -> np.ndarray:
    """Class votes of each query row's k nearest trusted rows (leave-one-out for trusted rows).

    Parameters
    ----------
    embedding : (n, d) float array; rows with NaN are neither queried nor used as neighbours.
    labels : (n,) int array of labels in [0, n_classes); only trusted rows' labels are read.
    trusted, query : (n,) bool masks of the neighbour pool and of the rows to vote for.
    n_classes : number of classes C.
    k : neighbours per row (capped by the pool size).
    smoothing : pseudo-count spread evenly over the classes (> 0 keeps votes strictly positive).
    map_work : where the searches run, :data:`KNN_CHUNK_ROWS` query rows each (here by
        default; on the workers with the Beam executor).

    Returns
    -------
    (n, C) float64 array: rows of query rows sum to 1; other rows are NaN.
    """
    if k < 1:
        raise ValueError(f"option --knn-k: must be >= 1, got {k}")
    n = len(labels)
    emb = np.asarray(embedding, dtype=np.float32)
    finite = np.isfinite(emb).all(axis=1)
    pool = np.flatnonzero(trusted & finite)
    rows = np.flatnonzero(query & finite)
    out = np.full((n, n_classes), np.nan)
    if len(rows) == 0 or len(pool) == 0:
        return out
    emb = emb.copy()
    faiss.normalize_L2(emb)
    kk = min(k + 1, len(pool))  # one extra so that a trusted row can drop itself
    spans = [(a, min(a + KNN_CHUNK_ROWS, len(rows))) for a in range(0, len(rows), KNN_CHUNK_ROWS)]
    found = map_work(functools.partial(nearest_in_pool, k=kk), spans, {"emb": emb, "pool": pool, "rows": rows})
    sims, nbr = np.concatenate([f[0] for f in found]), np.concatenate([f[1] for f in found])
    keep = nbr >= 0
    keep &= pool[np.clip(nbr, 0, None)] != rows[:, None]  # leave-one-out
    keep &= np.cumsum(keep, axis=1) <= k
    w = np.where(keep, (1.0 + sims.astype(np.float64)) / 2.0, 0.0)
    nbr_labels = labels[pool[np.clip(nbr, 0, None)]].astype(np.int64)
    flat = (np.arange(len(rows))[:, None] * n_classes + nbr_labels).ravel()
    votes = np.bincount(flat, weights=w.ravel(), minlength=len(rows) * n_classes)
    votes = votes.reshape(len(rows), n_classes) + smoothing / n_classes
    total = votes.sum(axis=1, keepdims=True)
    # No neighbour and no smoothing: an uninformative uniform vote rather than 0/0.
    out[rows] = np.where(total > 0, votes / np.where(total > 0, total, 1.0), 1.0 / n_classes)
    return out


# Query rows per search, on every executor: FAISS's flat search picks its kernel by the number
# of queries (the last bits of a similarity differ between a 10,000-row and a 150,000-row call),
# so the same fixed chunks everywhere are what makes the Beam executor's votes equal the local ones.
KNN_CHUNK_ROWS = 65_536


def nearest_in_pool(span: tuple[int, int], *, emb: np.ndarray, pool: np.ndarray, rows: np.ndarray,
                    k: int) -> tuple[np.ndarray, np.ndarray]:
    """Inner products and positions in ``pool`` of the ``k`` nearest pool rows of
    ``rows[span[0]:span[1]]`` (exact search; ``emb`` L2-normalised). One unit of a
    :data:`~winnow.stages.common.mapping.Map`: the pool (trusted rows) is small, each call
    indexes it again."""
    index = faiss.IndexFlatIP(emb.shape[1])
    index.add(np.ascontiguousarray(emb[pool]))
    return index.search(np.ascontiguousarray(emb[rows[span[0]:span[1]]]), k)


def without_meta(sc: NoiseScores) -> NoiseScores:
    """The same scores with the meta signal left out: ``noise_score = s_label``."""
    score = np.where(np.isfinite(sc.label_signal), sc.label_signal, np.nan)
    return replace(sc, score=np.clip(score, 0.0, 1.0), meta_signal=np.full_like(sc.meta_signal, np.nan),
                   signals=[s for s in sc.signals if s != "meta_weight"])


def meta_agreement(sc: NoiseScores, label_flags: np.ndarray) -> float | None:
    """AUROC of the meta signal for the rows that the label signal alone flags (None if undefined).

    The meta weights have no ground truth to be checked against, but the label signal's flags
    are mostly right when there is a trusted set: a meta signal that does not rank those rows
    above the others (AUROC near 0.5) carries no information and only dilutes ``noise_score``.
    Measured: L2RW weights of a linear head on warm-up CNN embeddings of CIFAR-10 agree at 0.57
    (their true AUROC is 0.56; averaging them in lowered the score's AUROC from 0.90 to 0.82);
    on the digits demo they agree at 0.88.
    """
    from winnow.stages.export.evaluate import auroc

    rows = np.isfinite(sc.meta_signal) & np.isfinite(sc.label_signal)
    return auroc(label_flags[rows], sc.meta_signal[rows]) if rows.any() else None


def meta_signal(weight: np.ndarray, zero_fraction: np.ndarray | None, scored: np.ndarray) -> np.ndarray:
    """``(1 - rank(weight) + zero_fraction) / 2`` over the scored rows; NaN elsewhere.

    Parameters
    ----------
    weight : (n,) aggregated meta weights (NaN = none).
    zero_fraction : (n,) fractions in [0, 1] of rounds with weight 0, or None.
    scored : (n,) bool mask of the rows to score.
    """
    weight = np.asarray(weight, dtype=np.float64)
    out = np.full(len(weight), np.nan)
    rows = np.flatnonzero(scored & np.isfinite(weight))
    if len(rows) == 0:
        return out
    ranks = rankdata(weight[rows], method="average")
    pct = (ranks - 1) / max(len(rows) - 1, 1)  # 0 = lowest weight
    sig = 1.0 - pct
    if zero_fraction is not None:
        z = np.clip(np.asarray(zero_fraction, dtype=np.float64)[rows], 0.0, 1.0)
        sig = np.where(np.isfinite(z), (sig + z) / 2.0, sig)
    out[rows] = sig
    return out


def combine_posterior(probs: np.ndarray | None, votes: np.ndarray | None, knn_weight: float) -> np.ndarray | None:
    """``(1 - b) * probs + b * votes`` row by row, falling back to whichever is present."""
    if not 0.0 <= knn_weight <= 1.0:
        raise ValueError(f"option --knn-weight: must be in [0, 1], got {knn_weight}")
    if probs is None and votes is None:
        return None
    if probs is not None:
        p = np.asarray(probs, dtype=np.float64)
        p = np.clip(p, 0.0, None)
        s = p.sum(axis=1, keepdims=True)
        p = np.where(s > 0, p / np.where(s > 0, s, 1.0), np.nan)  # renormalise; all-zero -> none
        if votes is None:
            return p
    else:
        return np.asarray(votes, dtype=np.float64)
    p_ok = np.isfinite(p).all(axis=1, keepdims=True)
    v_ok = np.isfinite(votes).all(axis=1, keepdims=True)
    mixed = (1 - knn_weight) * np.where(p_ok, p, 0) + knn_weight * np.where(v_ok, votes, 0)
    return np.where(p_ok & v_ok, mixed, np.where(p_ok, p, votes))


KNN_WEIGHT_GRID = tuple(round(0.1 * i, 1) for i in range(11))
KNN_WEIGHT_FALLBACK = 0.3  # with too few trusted rows to choose; also the tie-break anchor
MIN_TRUSTED_TO_CHOOSE = 10


MAX_EXACT_FLIPS = 20_000_000  # trusted rows x (C - 1) above which flips are drawn at random


def synthetic_flips(labels: np.ndarray, n_classes: int, *, repeats: int, seed: int) -> list[np.ndarray]:
    """Uniformly flipped copies of ``labels`` (each entry changed to another class).

    ``repeats == 0``: one copy per shift 1..C-1, i.e. every row flipped to every other class
    once: the exact expectation over uniform flips, with no randomness (a seed changed the F1
    of memorised digits embeddings by up to 0.035 with 3 random flips); with more than
    :data:`MAX_EXACT_FLIPS` flipped labels, 3 seeded random flips per row instead.
    ``repeats > 0``: that many seeded random flips per row.
    """
    y = np.asarray(labels, np.int64)
    if repeats == 0 and len(y) * (n_classes - 1) <= MAX_EXACT_FLIPS:
        return [(y + shift) % n_classes for shift in range(1, n_classes)]
    rng = np.random.default_rng(seed)
    return [(y + rng.integers(1, n_classes, size=len(y))) % n_classes for _ in range(repeats or 3)]


LINEAR_VOTE_CS = (0.01, 0.1, 1.0, 10.0)  # inverse L2 strengths tried; the best out-of-fold log-loss wins
LINEAR_VOTE_FOLDS = 5
LINEAR_VOTE_CHUNK = 65_536  # query rows per matrix product when predicting
# trusted rows x dimensions x classes above which --trusted-vote auto leaves the linear vote out:
# its 21 fits took 4-5 s at 1e7-2e8 (1,000-3,000 trusted rows, 100-300 classes) and grow with it.
LINEAR_VOTE_MAX_WORK = 2e9


def trusted_linear_votes(
    embedding: np.ndarray,
    labels: np.ndarray,
    *,
    trusted: np.ndarray,
    query: np.ndarray,
    n_classes: int,
    seed: int = 0,
    folds: int = LINEAR_VOTE_FOLDS,
    cs: tuple[float, ...] = LINEAR_VOTE_CS,
) -> tuple[np.ndarray | None, dict]:
    """Class probabilities of a multinomial logistic regression fit on the trusted rows alone.

    A linear probe of the trusted rows' standardised embeddings (scikit-learn's
    ``LogisticRegression``, L2): it never sees a noisy label, so it cannot learn noise that
    depends on the image as the cross-fitted probs do, and with a weak embedding it beats the k
    nearest trusted rows (CIFAR-10 default embed, 100 trusted rows per class: 0.50 accuracy on
    the true labels against 0.41 for the 5-NN vote). Trusted rows get out-of-fold probabilities
    (stratified, seeded folds), so their vote is out-of-sample as every other row's;
    the strength C is the value of ``cs`` with the lowest out-of-fold log-loss.

    Parameters
    ----------
    embedding : (n, d) float array; rows with NaN get no vote and are never fit on.
    labels : (n,) int labels in [0, n_classes); only trusted rows' labels are read.
    trusted, query : (n,) bool masks of the rows to fit on and of the rows to vote for.
    n_classes : C; classes without trusted rows get probability 0.
    seed : seeds the folds.

    Returns
    -------
    ((n, C) float64 array, NaN outside ``query``, or None when some trusted class has fewer than
    ``folds`` rows or fewer than two classes have any; a JSON-able description).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss
    from sklearn.model_selection import StratifiedKFold

    emb = np.asarray(embedding)
    finite = np.isfinite(emb).all(axis=1)
    pool = np.flatnonzero(trusted & finite)
    y = np.asarray(labels)[pool].astype(np.int64)
    counts = np.bincount(y, minlength=n_classes)
    present = np.flatnonzero(counts)
    if len(present) < 2 or counts[present].min() < folds:
        return None, {"skipped": f"needs >= {folds} trusted rows with an embedding in every trusted class "
                                 f"and >= 2 classes (smallest class: {int(counts[present].min()) if len(present) else 0})"}
    x = emb[pool].astype(np.float64)
    mu, sd = x.mean(axis=0), x.std(axis=0)
    sd = np.where(sd > 0, sd, 1.0)
    z = (x - mu) / sd
    splits = list(StratifiedKFold(folds, shuffle=True, random_state=seed).split(z, y))

    def fit(c: float, rows: np.ndarray) -> LogisticRegression:
        return LogisticRegression(C=c, max_iter=1000).fit(z[rows], y[rows])

    def full(model: LogisticRegression, xs: np.ndarray) -> np.ndarray:
        out = np.zeros((len(xs), n_classes))
        out[:, model.classes_] = model.predict_proba(xs)
        return out

    oof: dict[float, np.ndarray] = {}
    losses: dict[float, float] = {}
    for c in cs:
        pred = np.zeros((len(pool), n_classes))
        for fit_rows, held in splits:
            pred[held] = full(fit(c, fit_rows), z[held])
        oof[c] = pred
        losses[c] = float(log_loss(y, np.clip(pred, 1e-12, 1.0), labels=np.arange(n_classes)))
    best = min(cs, key=lambda c: (losses[c], c))
    model = fit(best, np.arange(len(pool)))
    out = np.full((len(emb), n_classes), np.nan)
    rows = np.flatnonzero(query & finite & ~trusted)
    for i in range(0, len(rows), LINEAR_VOTE_CHUNK):  # a chunk standardised at a time, not (n, d)
        r = rows[i:i + LINEAR_VOTE_CHUNK]
        out[r] = full(model, (emb[r].astype(np.float64) - mu) / sd)
    at_query = query[pool]
    out[pool[at_query]] = oof[best][at_query]
    return out, {"c": best, "cv_log_loss": {f"{c:g}": round(v, 4) for c, v in losses.items()}, "folds": folds,
                 "trusted_rows": int(len(pool))}


def choose_trusted_vote(probs: np.ndarray | None, votes: dict[str, np.ndarray], labels: np.ndarray, *,
                        trusted: np.ndarray, train: np.ndarray, n_classes: int, knn_weight: float | None = None,
                        seed: int = 0, repeats: int = 0) -> tuple[str, float, dict]:
    """The trusted vote (a key of ``votes``) and its share b that best separate clean from flipped labels.

    The trusted rows are clean and their probs and votes are out-of-sample, so for each vote and
    each b of :data:`KNN_WEIGHT_GRID` (only ``knn_weight`` when given; only b = 1 without probs)
    their label signal ``1 - q[y]`` is scored against the same rows with uniformly flipped labels
    (:func:`synthetic_flips`); the AUROC, with trusted rows reweighted to the train split's class
    mix, estimates how well that posterior ranks noisy train rows. The best wins; ties go to
    the first vote and to the b nearest :data:`KNN_WEIGHT_FALLBACK`. Measured (quality
    benchmark): on digits and four CIFAR-10 settings it picks the best grid value or matches 0.3,
    except pair noise, which uniform flips cannot mimic (it keeps 0.3 there). Uniform flips do
    not mimic image-dependent noise either, where b below the best is chosen
    (benchmarks/quality/RESULTS.md).

    Returns the chosen vote's name, b and a JSON-able description.
    """
    from sklearn.metrics import roc_auc_score

    first = next(iter(votes))
    fixed = 1.0 if probs is None else knn_weight
    ok = trusted.copy()
    for v in votes.values():
        ok &= np.isfinite(v).all(axis=1)
    if probs is not None:
        ok &= np.isfinite(probs).all(axis=1)
    rows = np.flatnonzero(ok)
    if len(rows) < MIN_TRUSTED_TO_CHOOSE or n_classes < 2:
        b = KNN_WEIGHT_FALLBACK if fixed is None else fixed
        return first, b, {"value": b, "vote": first, "method": (
            f"default: fewer than {MIN_TRUSTED_TO_CHOOSE} trusted rows with probs and embeddings to choose from")}
    y = labels[rows].astype(np.int64)
    flips = synthetic_flips(y, n_classes, repeats=repeats, seed=seed)
    cw = class_mix_weights(y, labels[train], n_classes)
    truth = np.r_[np.zeros(len(rows)), np.ones(len(rows) * len(flips))]
    sample_weight = np.tile(cw, 1 + len(flips))
    at = np.arange(len(rows))
    grid = KNN_WEIGHT_GRID if fixed is None else (fixed,)
    aucs: dict[tuple[str, float], float] = {}
    for name, v in votes.items():
        for b in grid:
            q = combine_posterior(None if probs is None else probs[rows], v[rows], b)
            assert q is not None
            scores = np.concatenate([1.0 - q[at, y]] + [1.0 - q[at, f] for f in flips])
            aucs[name, b] = float(roc_auc_score(truth, scores, sample_weight=sample_weight))
    order = list(votes)
    name, b = max(aucs, key=lambda k: (round(aucs[k], 9), -order.index(k[0]), -abs(k[1] - KNN_WEIGHT_FALLBACK)))
    best_auroc = "best AUROC of clean vs flipped labels on the trusted rows"
    if probs is None:
        how = "no probs: the trusted vote alone" + (f"; the vote with the {best_auroc}" if len(votes) > 1 else "")
    elif knn_weight is not None:
        how = "set (--knn-weight)" + (f"; the vote with the {best_auroc}" if len(votes) > 1 else "")
    else:
        how = f"auto: {best_auroc}"
    return name, b, {"value": b, "vote": name, "method": how, "trusted_rows": int(len(rows)),
                     "trusted_auroc": {f"{k[0]} {k[1]:.1f}": round(a, 4) for k, a in aucs.items()}}


def noise_scores(
    *,
    labels: np.ndarray,
    probs: np.ndarray | None,
    embedding: np.ndarray | None,
    split: np.ndarray,
    weights: np.ndarray | None = None,
    zero_fraction: np.ndarray | None = None,
    valid: np.ndarray | None = None,
    n_classes: int,
    knn_k: int = 5,
    knn_weight: float | None = 0.3,
    knn_smoothing: float = 1.0,
    trusted_vote: str = "auto",
    meta_weight: float = 0.5,
    seed: int = 0,
    flip_repeats: int = 0,
    map_work: Map = map_in_process,
) -> NoiseScores:
    """Score every usable train row; posterior and suggestions for every usable row.

    Parameters
    ----------
    labels : (n,) int given labels in [0, n_classes) (anything for invalid rows).
    probs : (n, C) out-of-sample class probabilities, or None (embed not run). NaN rows = none.
    embedding : (n, d) embeddings, or None. NaN rows = none.
    split : (n,) str array of ``train`` / ``trusted`` / ``test``.
    weights, zero_fraction : (n,) aggregated meta weight and zero fraction (NaN = none), or None.
    valid : (n,) bool, False for rows with an error (never scored nor used as neighbours).
    n_classes : C.
    knn_k, knn_weight, knn_smoothing, trusted_vote, meta_weight : see
        :class:`~winnow.stages.export.params.ExportParams`; ``knn_weight=None`` and
        ``trusted_vote="auto"`` are chosen with :func:`choose_trusted_vote` (flips of the trusted
        rows by :func:`synthetic_flips` with ``flip_repeats`` and ``seed``).
    map_work : where the trusted kNN vote's searches run (:data:`winnow.stages.common.mapping.Map`;
        the linear vote's fits stay here: a few small fits on the trusted rows, cheaper than a
        pipeline's start).

    Returns
    -------
    :class:`NoiseScores`; see the module docstring for the definitions.
    """
    labels = np.asarray(labels)
    n = len(labels)
    split = np.asarray(split)
    valid = np.ones(n, dtype=bool) if valid is None else np.asarray(valid, dtype=bool)
    if meta_weight < 0:
        raise ValueError(f"option --meta-weight: must be >= 0, got {meta_weight}")
    for name, arr in (("probs", probs), ("embedding", embedding)):
        if arr is not None and (arr.ndim != 2 or len(arr) != n):
            raise ValueError(f"{name}: expected shape ({n}, ...), got {arr.shape}")
    if probs is not None and probs.shape[1] != n_classes:
        raise ValueError(f"probs has {probs.shape[1]} columns but there are {n_classes} classes")
    train = valid & (split == schema.TRAIN)
    trusted = valid & (split == schema.TRUSTED)
    signals: list[str] = []

    if trusted_vote not in TRUSTED_VOTES:
        raise ValueError(f"option --trusted-vote: must be one of {', '.join(TRUSTED_VOTES)}, got {trusted_vote!r}")
    candidates: dict[str, np.ndarray] = {}
    linear_info: dict = {}
    if embedding is not None and trusted.any():
        if trusted_vote in ("auto", "knn"):
            candidates["knn"] = trusted_knn_votes(
                embedding, labels, trusted=trusted, query=valid, n_classes=n_classes, k=knn_k,
                smoothing=knn_smoothing, map_work=map_work,
            )
        work = float(trusted.sum()) * embedding.shape[1] * n_classes
        if trusted_vote == "auto" and work > LINEAR_VOTE_MAX_WORK:
            linear_info = {"skipped": f"trusted rows x dimensions x classes = {work:.2g} is above "
                                      f"{LINEAR_VOTE_MAX_WORK:.0e}: --trusted-vote linear fits it anyway"}
        elif trusted_vote in ("auto", "linear"):
            linear, linear_info = trusted_linear_votes(embedding, labels, trusted=trusted, query=valid,
                                                       n_classes=n_classes, seed=seed)
            if linear is not None:
                candidates["linear"] = linear
            elif trusted_vote == "linear":
                raise ValueError(f"option --trusted-vote linear: {linear_info['skipped']}; use --trusted-vote knn")
        candidates = {k: v for k, v in candidates.items() if np.isfinite(v[train]).all(axis=1).any()}
    has_probs = probs is not None and bool(np.isfinite(probs[train]).all(axis=1).any())
    votes = None
    knn_choice: dict = {}
    if candidates:
        name, b, knn_choice = choose_trusted_vote(
            probs if has_probs else None, candidates, labels, trusted=trusted, train=train, n_classes=n_classes,
            knn_weight=knn_weight, seed=seed, repeats=flip_repeats,
        )
        if knn_weight is None and has_probs:
            knn_weight = b
        if name == "linear":
            knn_choice["linear"] = linear_info
        elif "skipped" in linear_info:
            knn_choice["linear_skipped"] = linear_info["skipped"]
        votes = candidates[name]
        signals.append(f"trusted_{name}")
    if has_probs:
        signals.append("probs")
    posterior = combine_posterior(probs if has_probs else None, votes,
                                  KNN_WEIGHT_FALLBACK if knn_weight is None else knn_weight)
    if posterior is None:
        posterior = np.full((n, n_classes), np.nan)
    posterior[~valid] = np.nan
    has_post = np.isfinite(posterior).all(axis=1)
    suggested = np.where(has_post, np.argmax(np.nan_to_num(posterior, nan=-1.0), axis=1), -1)
    confidence = np.where(has_post, np.nanmax(np.where(has_post[:, None], posterior, 0.0), axis=1), np.nan)

    label_sig = np.full(n, np.nan)
    rows = np.flatnonzero(train & has_post)
    label_sig[rows] = np.clip(1.0 - posterior[rows, labels[rows].astype(np.int64)], 0.0, 1.0)

    meta = np.full(n, np.nan)
    if weights is not None and meta_weight > 0:
        meta = meta_signal(weights, zero_fraction, train)
        if np.isfinite(meta).any():
            signals.append("meta_weight")

    # Average of the available signals, row by row.
    num = np.nan_to_num(label_sig) + meta_weight * np.nan_to_num(meta)
    den = np.isfinite(label_sig) + meta_weight * np.isfinite(meta)
    score = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)
    score[~train] = np.nan
    return NoiseScores(
        score=np.clip(score, 0.0, 1.0), posterior=posterior, suggested_label=suggested.astype(np.int64),
        suggested_confidence=confidence, label_signal=label_sig, meta_signal=meta, signals=signals,
        knn_weight_choice=knn_choice,
    )
