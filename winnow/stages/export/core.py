"""Export: from the manifest and whatever later stages produced, the tables users act on.

``export(manifest, features, coreset, weights, params)`` is the pure core (tables in, tables and a
summary dict out); the pipeline adapter writes them as ``curated.parquet``, ``train.parquet``,
``flags.parquet`` (the pipeline shards large ones) and ``summary.json``. It is two steps, public
for executors that join by id elsewhere (Beam): :func:`export_columns` (every per-row decision
and the summary; needs no image bytes) and :func:`curated_rows` / :func:`train_rows` (the output
rows of any subset of manifest rows).

* ``curated``: every manifest row in manifest order, with the manifest, coreset and weights
  columns and ``noise_score``, ``noise_flag``, ``suggested_label``, ``suggested_confidence``
  (see :mod:`winnow.stages.export.scores` and :mod:`winnow.stages.export.calibrate`). Feature vectors stay in
  ``features.parquet`` (joinable on ``id``). Rows with an ``error`` keep null scores and
  ``noise_flag = False``.
* ``train``: what to train on (``--policy``), in manifest order, with ``id``, ``uri``/``image``,
  ``label``, ``label_name``, ``split`` and the final ``weight``. Weights are clipped at 0 (some
  weighting methods emit negative weights) and scaled so that the median positive train weight
  is 1; missing weights take that median. With ``weight`` and ``coreset+weight`` a flagged row's
  final weight is 0 (it stays in the manifest, so the choice is visible and reversible). Trusted rows are clean, so they are included (unless
  ``--no-include-trusted``) with ``--trusted-weight`` (default 1, a typical clean row). Rows with
  an error, test rows and ``true_label`` never appear.
* ``flags``: the flagged rows of ``curated`` by descending ``noise_score`` (ties: manifest order).
* ``summary``: counts per class, noise estimate, threshold and how it was calibrated, errors and
  which signals were used (``meta_signal_check``: whether the meta weights agreed with the label
  signal enough to be used, see ``--meta-min-agreement``).
All tables carry the class names and the parameters (plus ``seed``) as schema metadata.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from winnow.stages.common import schema
from winnow.stages.common.arrow import class_names, vectors_from_arrow, with_metadata
from winnow.stages.common.mapping import Map, map_in_process
from winnow.stages.common.params import to_dict, validate_choices
from winnow.stages.common.reprs import short_repr
from winnow.stages.export.audit import audit
from winnow.stages.export.calibrate import (
    class_mix_weights,
    confident_joint,
    estimated_noisy_per_class,
    mixture_noise_rate,
    threshold_for_count,
    threshold_max_expected_f1,
    threshold_max_expected_f1_mixture,
)
from winnow.stages.export.fdr import fdr_flags
from winnow.stages.export.params import ExportParams
from winnow.stages.export.scores import (
    NoiseScores,
    meta_agreement,
    noise_scores,
    synthetic_flips,
    without_meta,
)
from winnow.stages.select.knn import IndexSpec

TRAIN_COLUMNS = ("id", "uri", "image", "label", "label_name", "split", "weight")


@dataclass
class ExportResult:
    """Tables and summary produced by :func:`export`."""

    curated: pa.Table
    train: pa.Table
    flags: pa.Table
    summary: dict

    __repr__ = short_repr


@dataclass
class ExportColumns:
    """The per-row results of export, for the n manifest rows in manifest order.

    Attributes
    ----------
    added : (field, n-row array) pairs appended to the manifest in ``curated``: the coreset and
        weights columns, then ``noise_score``, ``noise_flag``, ``suggested_label``,
        ``suggested_confidence``.
    flag_order : (f,) int manifest rows of the ``flags`` table, in its order.
    train_rows : (t,) int manifest rows of the ``train`` table, ascending.
    final_weight : (n,) float64 final train weight of every row (meaningful on ``train_rows``;
        written as float32).
    classes, params : the schema metadata of the output tables.
    summary : the ``summary.json`` dict.
    """

    added: list[tuple[pa.Field, pa.Array | pa.ChunkedArray]]
    flag_order: np.ndarray
    train_rows: np.ndarray
    final_weight: np.ndarray
    classes: list[str]
    params: dict[str, Any]
    summary: dict


def _floats(table: pa.Table, column: str) -> np.ndarray:
    """A numeric column as float64 with nulls as NaN."""
    return np.asarray(pc.cast(table[column], pa.float64()).to_numpy(), dtype=np.float64)


def _check_aligned(manifest: pa.Table, other: pa.Table | None, name: str) -> None:
    if other is None:
        return
    if "id" not in other.column_names:
        raise ValueError(f"{name} table has no 'id' column")
    if other.num_rows != manifest.num_rows:
        raise ValueError(
            f"{name} table has {other.num_rows} rows but the manifest has {manifest.num_rows}; "
            f"re-run the stage that wrote it (rows must keep the manifest's order)"
        )
    same = pc.equal(pc.cast(other["id"], pa.string()), manifest["id"])
    if not pc.all(pc.fill_null(same, False)).as_py():
        first = int(np.flatnonzero(~same.to_numpy(zero_copy_only=False))[0])
        raise ValueError(
            f"{name} table row {first} has id {other['id'][first].as_py()!r} but the manifest has "
            f"{manifest['id'][first].as_py()!r}; tables must keep the manifest's ids and order"
        )


def _classes(manifest: pa.Table, labels: np.ndarray, valid: np.ndarray) -> list[str]:
    try:
        return class_names(manifest)
    except KeyError:
        pass
    n_classes = int(labels[valid].max()) + 1 if valid.any() else 0
    names = [str(c) for c in range(n_classes)]
    if "label_name" in manifest.column_names:
        for lab, name in zip(labels[valid], np.asarray(manifest["label_name"].to_pylist(), dtype=object)[valid]):
            if name is not None and names[int(lab)] == str(int(lab)):
                names[int(lab)] = name
    return names


# Out-of-sample accuracy on the trusted rows above which the confident joint is trusted (auto).
AUTO_MIN_TRUSTED_ACCURACY = 0.8
# Below this share of the confident joint's noise rate, auto takes the mixture's rate for a broken bound.
AUTO_MIN_MIXTURE_SHARE = 0.5


def _auto_calibration(posterior: np.ndarray, labels: np.ndarray) -> tuple[str, str]:
    """Choose the calibration from how reliable the class posterior is, measured on trusted rows.

    The confident joint counts noise well when the posterior is accurate (digits: F1 0.975 on
    the demo against 0.856 for trusted-clean) and overestimates it badly when it is weak (CIFAR
    on raw pixels: 0.74 for 0.40), where the trusted rows' clean score distribution is safer.
    The trusted rows' out-of-sample accuracy tells the two regimes apart.
    """
    if len(labels) < 10:
        return "noise-rate", "fewer than 10 trusted rows with a posterior: noise-rate"
    acc = float((posterior.argmax(axis=1) == labels).mean())
    choice = "noise-rate" if acc >= AUTO_MIN_TRUSTED_ACCURACY else "trusted-clean"
    return choice, f"trusted out-of-sample accuracy {acc:.3f} (threshold {AUTO_MIN_TRUSTED_ACCURACY}): {choice}"


@dataclass
class CalibrationInput:
    """What every calibration method reads (n rows, C classes).

    ``train``: scored usable train rows; ``trusted``: usable trusted rows with a posterior;
    ``est``: the confident joint's noisy count per class, ``cj_rows``: the rows it counted.
    """

    sc: NoiseScores
    labels: np.ndarray
    train: np.ndarray
    trusted: np.ndarray
    n_classes: int
    est: np.ndarray
    cj_rows: np.ndarray
    params: ExportParams
    seed: int


# A calibration method: (inputs, info dict it adds its description to) -> (threshold, per-class
# estimated noisy counts). Adding a method is one entry in CALIBRATIONS (and in params' choices).
Calibration = Callable[[CalibrationInput, dict[str, Any]], tuple[float, np.ndarray]]


def _noise_rate(c: CalibrationInput, info: dict[str, Any]) -> tuple[float, np.ndarray]:
    """Flag the confident joint's estimated number of noisy train rows."""
    count = int(round(c.est.sum()))
    info.update(method="noise-rate: flag the estimated number of noisy train rows", flagged_target=count)
    return threshold_for_count(c.sc.score[c.train], count), c.est


def _trusted_clean(c: CalibrationInput, info: dict[str, Any]) -> tuple[float, np.ndarray]:
    """Max expected F1 from the trusted rows' clean score distribution (noise-rate below 10 rows)."""
    if c.trusted.sum() < 10:
        info["fallback"] = "trusted-clean needs >= 10 usable trusted rows with features; used noise-rate"
        return _noise_rate(c, info)
    sc, labels, train = c.sc, c.labels, c.train
    rows = np.flatnonzero(c.trusted)
    label_clean = 1.0 - sc.posterior[rows, labels[rows]]
    # Reweight trusted rows to the train split's class mix (trusted sets are often balanced).
    cw = class_mix_weights(labels[rows], labels[train], c.n_classes)
    # Trusted rows have a label signal but no meta weight, so the clean distribution is known
    # for the label signal only. With the meta signal in the score, the label signal tells how
    # many rows to flag and the score which: every fill of the trusted rows' missing meta
    # signal tried (the like-clean rows' median, or their whole distribution) misjudged the
    # clean scores' spread, because meta and label signal are correlated (CIFAR-10 with L2RW
    # weights: expected F1 0.98-1.00 reported, 0.74 measured).
    with_meta = np.isfinite(sc.meta_signal[train]).any()
    calib = sc.label_signal if with_meta else sc.score
    pi_mix = mixture_noise_rate(calib[train], label_clean, cw)
    if pi_mix <= 0:
        # No train row scores lower than the clean distribution explains: the mixture bound sees
        # no noise, as under instance-dependent noise, where wrong labels hide among clean rows
        # (CIFAR-10, model:0.4: it flagged nothing; the confident joint's count gave F1 0.46).
        info["fallback"] = ("the trusted-clean mixture found no noise at low scores; used noise-rate (the "
                            "confident joint's count)")
        return _noise_rate(c, info)
    thr, f1 = threshold_max_expected_f1_mixture(calib[train], label_clean, pi_mix, cw)
    info.update(method="trusted-clean: max expected F1 from the trusted rows' clean score distribution",
                noise_rate_mixture=pi_mix, expected_f1=f1, trusted_rows=int(len(rows)))
    if with_meta:
        count = int((np.isfinite(calib) & train & (calib >= thr)).sum())
        thr = threshold_for_count(sc.score[train], count)
        info.update(method=info["method"] + ", on the label signal; the same number of rows flagged by noise_score",
                    flagged_target=count)
    # The calibration judged the posterior too weak for the confident joint, whose count is
    # then far off (CIFAR-10: 0.63 for 0.40); report the mixture's estimate, split over the
    # classes as the confident joint splits its own.
    count = pi_mix * int(train.sum())
    info["noise_estimate"] = {"method": "mixture of the trusted rows' clean score distribution",
                              "count": count, "rate": pi_mix,
                              "confident_joint_rate": info["noise_estimate"]["rate"]}
    est = c.est * (count / c.est.sum()) if c.est.sum() > 0 else c.est
    return thr, est


def _trusted_flips(c: CalibrationInput, info: dict[str, Any]) -> tuple[float, np.ndarray]:
    """Max expected F1 on trusted rows scored with their labels and with synthetic uniform flips."""
    if c.trusted.sum() < 2:
        raise ValueError("--calibration trusted-flips needs at least 2 usable trusted rows with features; "
                         "use --calibration noise-rate or --flag-threshold")
    sc = c.sc
    rows = np.flatnonzero(c.trusted)
    meta_fill = float(np.nanmedian(sc.meta_signal)) if np.isfinite(sc.meta_signal).any() else np.nan
    m = c.params.meta_weight if np.isfinite(meta_fill) else 0.0

    def score_of(lab: np.ndarray) -> np.ndarray:
        s_label = 1.0 - sc.posterior[rows, lab]
        return (s_label + m * np.nan_to_num(meta_fill)) / (1 + m)

    given = c.labels[rows].astype(np.int64)
    clean = score_of(given)
    flips = synthetic_flips(given, c.n_classes, repeats=c.params.flip_repeats, seed=c.seed)
    noisy = np.concatenate([score_of(f) for f in flips])
    prevalence = float(c.est.sum() / c.cj_rows.sum())
    thr, f1 = threshold_max_expected_f1(clean, noisy, prevalence)
    info.update(method="trusted-flips: max expected F1 on trusted rows with synthetic uniform flips",
                trusted_rows=int(len(rows)), flips=int(len(noisy)), expected_f1=f1, prevalence=prevalence)
    return thr, c.est


CALIBRATIONS: dict[str, Calibration] = {
    "noise-rate": _noise_rate,
    "trusted-clean": _trusted_clean,
    "trusted-flips": _trusted_flips,
}


def _calibrate(
    sc: NoiseScores, labels: np.ndarray, split: np.ndarray, valid: np.ndarray, n_classes: int,
    params: ExportParams, seed: int,
) -> tuple[float | None, dict[str, Any], np.ndarray | None]:
    """Threshold, its description, and the per-class estimated noisy counts (or None).

    ``--flag-threshold`` overrides; without a class posterior nothing can be calibrated; else
    ``--calibration`` names an entry of :data:`CALIBRATIONS` (``auto``: :func:`_auto_calibration`).
    """
    train = valid & (split == schema.TRAIN) & np.isfinite(sc.score)
    has_post = np.isfinite(sc.posterior).all(axis=1)
    est = None
    info: dict[str, Any] = {}
    cj_rows = train & has_post
    if cj_rows.any():
        joint = confident_joint(sc.posterior[cj_rows], labels[cj_rows], n_classes)
        est = estimated_noisy_per_class(joint)
        info["noise_estimate"] = {
            "method": "confident joint of the combined class posterior",
            "count": float(est.sum()),
            "rate": float(est.sum() / cj_rows.sum()),
        }
    if params.flag_threshold is not None and params.flag_threshold >= 0:
        info.update(method="override (--flag-threshold)")
        return float(params.flag_threshold), info, est
    if est is None:
        info.update(method="none: no class posterior to calibrate on (run embed, or pass --flag-threshold)")
        return None, info, est
    trusted = valid & (split == schema.TRUSTED) & has_post
    calibration = params.calibration
    inputs_estimate = dict(info["noise_estimate"])
    auto_reason = ""
    if calibration == "auto":
        calibration, auto_reason = _auto_calibration(sc.posterior[trusted], labels[trusted])
        info["auto"] = auto_reason
    inputs = CalibrationInput(sc=sc, labels=labels, train=train, trusted=trusted, n_classes=n_classes, est=est,
                              cj_rows=cj_rows, params=params, seed=seed)
    cj_rate = inputs_estimate["rate"]
    threshold, est = CALIBRATIONS[calibration](inputs, info)
    mix_rate = info.get("noise_rate_mixture")
    if params.calibration == "auto" and mix_rate is not None and mix_rate < AUTO_MIN_MIXTURE_SHARE * cj_rate:
        # The mixture's estimate is a lower bound on the noise rate, tight only when the trusted
        # rows score like the clean train rows. When the noise picked the hard rows (people's
        # noise; --inject-noise model), the clean train rows left are easier than the trusted
        # rows and the bound collapses (CIFAR-10 model:0.4: 0.04-0.15 for 0.40, F1 down to 0.14;
        # digits: 0.06-0.10), while the confident joint's count stays near the truth (0.46,
        # F1 0.54-0.55). Where the bound held through the default embed (uniform and pair noise)
        # it was 0.58 of the confident joint's rate (0.46 on PCA-pixel pair noise, where the
        # switch changed F1 by +0.002). benchmarks/quality/RESULTS.md has the table.
        info.clear()
        info.update(noise_estimate=inputs_estimate, auto=(
            f"{auto_reason}; the trusted-clean mixture estimated {mix_rate:.3f}, below "
            f"{AUTO_MIN_MIXTURE_SHARE} x the confident joint's {cj_rate:.3f} (the trusted rows do not score like "
            "the clean train rows, as when the noise picked the hard rows): noise-rate"))
        threshold, est = _noise_rate(inputs, info)
    return threshold, info, est


MIN_FLAGS_TO_CHECK = 30  # rows the label signal must flag before the meta signal can be judged on them


def _check_meta_signal(
    sc: NoiseScores, labels: np.ndarray, split: np.ndarray, valid: np.ndarray, n_classes: int,
    params: ExportParams, seed: int,
) -> tuple[NoiseScores, dict[str, Any]]:
    """Drop the meta signal when it does not agree with the label signal's own flags.

    The label signal's flags come from the same calibration as the final flags, on the score
    without the meta signal. Returns the scores to use and what was decided (empty when there
    was nothing to check).
    """
    if "meta_weight" not in sc.signals or params.meta_min_agreement <= 0:
        return sc, {}
    label_only = without_meta(sc)
    if not np.isfinite(label_only.score).any():
        return sc, {}
    threshold, _, _ = _calibrate(label_only, labels, split, valid, n_classes, params, seed)
    if threshold is None:
        return sc, {}
    label_flags = np.isfinite(label_only.score) & (label_only.score >= threshold)
    flagged = int(label_flags.sum())
    # Too few flagged rows to judge: an AUROC over k positives has a standard error of about
    # 0.29 / sqrt(k) (0.17 at 3 rows), and on clean imbalanced data those few rows are tail-class
    # rows that L2RW rightly weighs up, so a 3-row check dropped exactly the rebalancing weights
    # (digits --imbalance 20: agreement 0.16 on 3 rows; benchmarks/weight/RESULTS.md).
    agreement = meta_agreement(sc, label_flags) if flagged >= MIN_FLAGS_TO_CHECK else None
    used = agreement is None or agreement >= params.meta_min_agreement
    check = {"agreement_auroc": _num(agreement), "min_agreement": params.meta_min_agreement, "used": used,
             "flagged_rows": flagged}
    return (sc if used else label_only), check


@dataclass
class PolicyInput:
    """What every ``--policy`` reads: (n,) masks and scores of the manifest rows."""

    policy: str
    n: int
    usable_train: np.ndarray  # usable train-split rows
    flags: np.ndarray
    score: np.ndarray
    meta: np.ndarray | None  # meta weights that passed the agreement check, else None
    coreset: pa.Table | None


def _coreset_rows(p: PolicyInput, *, times_meta: bool) -> tuple[np.ndarray, np.ndarray]:
    if p.coreset is None:
        raise ValueError(f"--policy {p.policy} needs coreset.parquet: run select first, or use --policy weight")
    selected = np.asarray(pc.fill_null(p.coreset["selected"], False).to_numpy(zero_copy_only=False), dtype=bool)
    w = _floats(p.coreset, "coreset_weight")
    return p.usable_train & selected, (w * p.meta if times_meta and p.meta is not None else w)


@dataclass(frozen=True)
class Policy:
    """A ``--policy``: which train rows go into ``train.parquet`` with which raw weights (NaN: no
    signal), and whether a flagged row's final weight is 0 (it then also stays out of the median
    that scales the weights). Adding a policy is one entry in :data:`POLICIES_BY_NAME` (and in
    params' choices)."""

    rows_and_weights: Callable[[PolicyInput], tuple[np.ndarray, np.ndarray]]
    zero_flagged: bool = False


POLICIES_BY_NAME: dict[str, Policy] = {
    "weight": Policy(lambda p: (p.usable_train, p.meta if p.meta is not None else np.ones(p.n)), zero_flagged=True),
    "soft": Policy(lambda p: (p.usable_train, 1.0 - p.score)),
    "drop-flagged": Policy(lambda p: (p.usable_train & ~p.flags, np.ones(p.n))),
    "coreset": Policy(lambda p: _coreset_rows(p, times_meta=False)),
    "coreset+weight": Policy(lambda p: _coreset_rows(p, times_meta=True), zero_flagged=True),
}


def export_columns(
    manifest: pa.Table,
    features: pa.Table | None,
    coreset: pa.Table | None,
    weights: pa.Table | None,
    params: ExportParams,
    *,
    seed: int = 0,
    map_work: Map = map_in_process,
) -> ExportColumns:
    """Scores, flags, calibration, train weights and summary: every per-row decision of
    :func:`export`, without building the output tables.

    ``manifest`` needs only ``id``, ``label``, ``split`` (and ``error``, ``label_name`` and the
    class-name metadata when present): the image bytes are not read, so an executor can compute
    the columns on one machine and join them to the full manifest rows by id elsewhere
    (:func:`curated_rows`, :func:`train_rows`). Arguments as in :func:`export`; ``map_work``:
    where the trusted kNN vote's searches run (:data:`winnow.stages.common.mapping.Map`; the
    Beam executor passes its workers).
    """
    validate_choices(params)
    if not 0.0 <= params.meta_min_agreement <= 1.0:
        raise ValueError(f"option --meta-min-agreement: must be in [0, 1], got {params.meta_min_agreement}")
    for col in ("id", "label", "split"):
        if col not in manifest.column_names:
            raise ValueError(f"manifest has no {col!r} column; re-run ingest")
    for name, table in (("features", features), ("coreset", coreset), ("weights", weights)):
        _check_aligned(manifest, table, name)
    n = manifest.num_rows
    split = np.asarray(manifest["split"].to_pylist(), dtype=object).astype(str)
    bad_split = ~np.isin(split, schema.SPLITS)
    if bad_split.any():
        i = int(np.flatnonzero(bad_split)[0])
        raise ValueError(f"manifest row {i}: split {split[i]!r} is not one of {', '.join(schema.SPLITS)}")
    errors = (
        manifest["error"].to_pylist() if "error" in manifest.column_names else [None] * n
    )
    valid = np.array([e is None for e in errors], dtype=bool)
    label_f = _floats(manifest, "label")
    missing = valid & (split != schema.TEST) & ~np.isfinite(label_f)
    if missing.any():
        i = int(np.flatnonzero(missing)[0])
        raise ValueError(f"manifest row {i} (id {manifest['id'][i].as_py()!r}) has no label and no error; "
                         f"ingest must set 'error' for rows that cannot be used")
    labels = np.nan_to_num(label_f, nan=-1).astype(np.int64)
    classes = _classes(manifest, labels, valid)
    n_classes = len(classes)
    out_of_range = valid & np.isfinite(label_f) & ((labels < 0) | (labels >= n_classes))
    if out_of_range.any():
        i = int(np.flatnonzero(out_of_range)[0])
        raise ValueError(f"manifest row {i}: label {labels[i]} is outside the {n_classes} classes")

    # ---- signals -------------------------------------------------------------------------
    cols = features.column_names if features is not None else []
    probs = vectors_from_arrow(features[schema.PROBS]) if schema.PROBS in cols else None
    embedding = vectors_from_arrow(features[schema.EMBEDDING]) if schema.EMBEDDING in cols else None
    meta = zero = None
    if weights is not None and "weight" in weights.column_names:
        meta = _floats(weights, "weight")
        zero = _floats(weights, "zero_fraction") if "zero_fraction" in weights.column_names else None
    sc = noise_scores(
        labels=labels, probs=probs, embedding=embedding, split=split, weights=meta,
        zero_fraction=zero, valid=valid, n_classes=n_classes, knn_k=params.knn_k,
        knn_weight=params.knn_weight if params.knn_weight is not None and params.knn_weight >= 0 else None,
        knn_smoothing=params.knn_smoothing, trusted_vote=params.trusted_vote, meta_weight=params.meta_weight,
        seed=seed,
        flip_repeats=params.flip_repeats, map_work=map_work,
    )
    sc, meta_check = _check_meta_signal(sc, labels, split, valid, n_classes, params, seed)
    threshold, cal, est = _calibrate(sc, labels, split, valid, n_classes, params, seed)
    scored = np.isfinite(sc.score)
    flags = scored & (sc.score >= threshold) if threshold is not None else np.zeros(n, dtype=bool)

    # ---- per-row columns --------------------------------------------------------------------
    meta_params = {**to_dict(params), "seed": seed}
    added: list[tuple[pa.Field, pa.ChunkedArray | pa.Array]] = []
    for name, table in (("coreset", coreset), ("weights", weights)):
        if table is None:
            continue
        for col in table.column_names:
            if col == "id":
                continue
            if col in manifest.column_names or col in [f.name for f, _ in added]:
                raise ValueError(f"{name} table column {col!r} clashes with an existing column")
            added.append((table.schema.field(col), table[col]))
    has_post = sc.suggested_label >= 0
    added += [
        (pa.field("noise_score", pa.float32()), pa.array(sc.score, pa.float32(), mask=~scored)),
        (pa.field("noise_flag", pa.bool_(), nullable=False), pa.array(flags)),
        (pa.field("suggested_label", pa.int32()), pa.array(sc.suggested_label, pa.int32(), mask=~has_post)),
        (pa.field("suggested_confidence", pa.float32()),
         pa.array(sc.suggested_confidence, pa.float32(), mask=~has_post)),
    ]
    fdr = None
    if params.fdr is not None:
        fdr = fdr_flags(sc.label_signal, sc.posterior, labels, train=valid & (split == schema.TRAIN),
                        trusted=valid & (split == schema.TRUSTED), q=params.fdr)
        tested = np.isfinite(fdr.pvalue)
        added += [
            (pa.field("noise_pvalue", pa.float32()), pa.array(fdr.pvalue, pa.float32(), mask=~tested)),
            (pa.field("noise_flag_fdr", pa.bool_(), nullable=False), pa.array(fdr.flag)),
        ]
    issues = None
    if params.audit:
        ids = manifest["id"].to_pylist()
        issues = audit(embedding, sc.posterior, labels, split, valid, classes, ids=ids, spec=IndexSpec(seed=seed))
        added += issues.columns(ids)
    idx = np.flatnonzero(flags)
    flag_order = idx[np.lexsort((idx, -sc.score[idx]))]

    # ---- train weights ---------------------------------------------------------------------
    usable_train = valid & (split == schema.TRAIN)
    # Meta weights that failed the agreement check do not track the noise: they would only add
    # variance to the training weights (CIFAR-10, small CNN: 0.623 with L2RW's, 0.637 without).
    trusted_meta = meta if meta_check.get("used", True) else None
    policy = POLICIES_BY_NAME[params.policy]
    rows, raw = policy.rows_and_weights(PolicyInput(
        policy=params.policy, n=n, usable_train=usable_train, flags=flags, score=sc.score, meta=trusted_meta,
        coreset=coreset))
    raw = np.where(np.isfinite(raw), np.clip(raw, 0.0, None), np.nan)
    # The final weight is winnow's whole judgement: with the weighting policies a flagged row
    # weighs 0 whatever its meta weight (demo: test accuracy 0.80 with meta weights alone, 0.99
    # with flags), and the median of the rows that keep a weight is 1.
    gate = policy.zero_flagged
    pos = raw[rows & (raw > 0) & ~(flags & gate)]
    scale = float(np.median(pos)) if len(pos) else 1.0
    final = np.where(np.isfinite(raw), raw / scale, 1.0)
    if gate:
        final = np.where(flags, 0.0, final)
    if params.include_trusted:
        trusted_rows = valid & (split == schema.TRUSTED)
        final = np.where(trusted_rows, float(params.trusted_weight), final)
        rows = rows | trusted_rows

    summary = _Decisions(
        split=split, errors=errors, valid=valid, labels=labels, classes=classes, sc=sc,
        flags=flags, threshold=threshold, cal=cal, est=est, rows=rows, final=final, params=params,
        meta_check=meta_check, fdr=None if fdr is None else fdr.summary,
        audit=None if issues is None else issues.summary,
        inputs={"features": features is not None, "coreset": coreset is not None,
                "weights": weights is not None},
    ).summary()
    return ExportColumns(
        added=added, flag_order=flag_order, train_rows=np.flatnonzero(rows),
        final_weight=final, classes=classes, params=meta_params, summary=summary,
    )


def curated_rows(manifest: pa.Table, columns: ExportColumns, rows: np.ndarray | None = None) -> pa.Table:
    """Rows of the ``curated`` table: ``manifest`` plus the export columns of its rows.

    ``manifest`` holds the manifest rows at positions ``rows`` ((m,) int, any order; default:
    every row, in order) with all the manifest's columns and schema metadata. The ``flags``
    table is ``curated_rows`` of ``columns.flag_order``.
    """
    curated = manifest
    take = None if rows is None else pa.array(np.asarray(rows, np.int64))
    for field, values in columns.added:
        curated = curated.append_column(field, values if take is None else values.take(take))
    return with_metadata(curated, classes=columns.classes, params=columns.params)


def train_rows(manifest: pa.Table, columns: ExportColumns, rows: np.ndarray) -> pa.Table:
    """Rows of the ``train`` table: ``manifest`` holds the manifest rows at positions ``rows``
    ((m,) int, each one of ``columns.train_rows``), with at least the manifest's
    :data:`TRAIN_COLUMNS`; returns those columns, the user's own columns
    (:func:`~winnow.stages.common.schema.user_columns`), and the final ``weight``."""
    train_cols = [c for c in TRAIN_COLUMNS[:-1] if c in manifest.column_names] + schema.user_columns(manifest)
    weight = columns.final_weight[np.asarray(rows, np.int64)]
    train = manifest.select(train_cols).append_column(
        pa.field("weight", pa.float32(), nullable=False), pa.array(weight, pa.float32())
    )
    return with_metadata(train.replace_schema_metadata(None), classes=columns.classes, params=columns.params)


def export(
    manifest: pa.Table,
    features: pa.Table | None,
    coreset: pa.Table | None,
    weights: pa.Table | None,
    params: ExportParams,
    *,
    seed: int = 0,
) -> ExportResult:
    """Score, flag and export the manifest.

    All tables share ``id`` and manifest row order (columns: :mod:`winnow.stages.common.schema`).
    ``features`` (``embedding``/``probs`` as ``fixed_size_list<float32>``), ``coreset`` and
    ``weights`` may each be None when their stage was not run: export uses what it has and lists
    the signals used in ``summary["signals"]``. ``seed`` drives the synthetic flips of
    ``--calibration trusted-flips`` (the only random choice).

    This is :func:`export_columns` (the per-row decisions, which need no image bytes) followed
    by :func:`curated_rows` and :func:`train_rows` on the whole manifest.
    """
    cols = export_columns(manifest, features, coreset, weights, params, seed=seed)
    curated = curated_rows(manifest, cols)
    flag_table = curated.take(pa.array(cols.flag_order, pa.int64()))
    flag_table = with_metadata(flag_table, classes=cols.classes, params=cols.params)
    keep = pa.array(cols.train_rows, pa.int64())
    train = train_rows(manifest.take(keep), cols, cols.train_rows)
    return ExportResult(curated=curated, train=train, flags=flag_table, summary=cols.summary)


def _num(x: float | None) -> float | None:
    """JSON-safe float (NaN/inf -> None)."""
    return None if x is None or not math.isfinite(x) else float(x)


@dataclass
class _Decisions:
    """Every decision of :func:`export_columns` that ``summary.json`` reports (n manifest rows)."""

    split: np.ndarray  # (n,) str
    errors: list[str | None]
    valid: np.ndarray  # (n,) bool, no error
    labels: np.ndarray  # (n,) int64, -1 where missing
    classes: list[str]
    sc: NoiseScores
    flags: np.ndarray  # (n,) bool
    threshold: float | None
    cal: dict[str, Any]  # the calibration's description (noise_estimate, method, ...)
    est: np.ndarray | None  # (C,) estimated noisy rows per class
    rows: np.ndarray  # (n,) bool, rows of train.parquet
    final: np.ndarray  # (n,) final train weight
    params: ExportParams
    inputs: dict[str, bool]  # which upstream tables export had
    meta_check: dict[str, Any]
    fdr: dict[str, Any] | None = None  # --fdr: q, rows flagged, trusted rows used, the exchangeability check
    audit: dict[str, Any] | None = None  # --audit: duplicates, outliers, class overlap and balance

    def summary(self) -> dict:
        """The ``summary.json`` dict."""
        n = len(self.split)
        train = self.valid & (self.split == schema.TRAIN)
        per_class = []
        changed = train & (self.sc.suggested_label >= 0) & (self.sc.suggested_label != self.labels)
        for c, name in enumerate(self.classes):
            given = train & (self.labels == c)
            per_class.append({
                "label": c,
                "name": name,
                "train_rows": int(given.sum()),
                "trusted_rows": int((self.valid & (self.split == schema.TRUSTED) & (self.labels == c)).sum()),
                "flagged": int((self.flags & given).sum()),
                "estimated_noisy": None if self.est is None else _num(float(self.est[c])),
                "suggested_other_label": int((changed & given).sum()),
                "in_train_manifest": int((self.rows & (self.labels == c)).sum()),
            })
        return {
            "rows": n,
            "splits": {s: int((self.split == s).sum()) for s in schema.SPLITS},
            "errors": {"count": int((~self.valid).sum()),
                       "by_reason": dict(Counter(e for e in self.errors if e is not None))},
            "inputs": self.inputs,
            "signals": self.sc.signals,
            "knn_weight": self.sc.knn_weight_choice or None,
            "meta_signal_check": self.meta_check or None,
            "scored_rows": int(np.isfinite(self.sc.score).sum()),
            "noise_estimate": self.cal.get("noise_estimate"),
            "threshold": {"value": _num(self.threshold), **{k: v for k, v in self.cal.items() if k != "noise_estimate"}},
            "flagged": int(self.flags.sum()),
            "flag_rate": _num(self.flags.sum() / train.sum()) if train.any() else None,
            **({"fdr": self.fdr} if self.fdr is not None else {}),
            **({"audit": self.audit} if self.audit is not None else {}),
            "policy": self.params.policy,
            "train_manifest": {"rows": int(self.rows.sum()), "weight_sum": float(self.final[self.rows].sum())},
            "classes": per_class,
        }
