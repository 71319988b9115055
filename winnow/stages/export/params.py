"""Options of the export stage (one field per CLI flag / TOML key)."""

from __future__ import annotations

from dataclasses import dataclass

from winnow.stages.common.params import check_options, option

POLICIES = ("weight", "soft", "drop-flagged", "coreset", "coreset+weight")
CALIBRATIONS = ("auto", "noise-rate", "trusted-clean", "trusted-flips")
TRUSTED_VOTES = ("auto", "knn", "linear")


@dataclass(frozen=True)
class ExportParams:
    """How export scores, flags and turns the manifest into a training manifest."""

    policy: str = option(
        "weight",
        "What train.parquet holds: 'weight' (every usable train row with its meta weight; 0 if flagged), "
        "'soft' (every usable train row weighted by 1 - noise_score: suspects are drawn rarely, none is "
        "cut), 'drop-flagged' (unflagged train rows, weight 1), 'coreset' (selected rows with their "
        "CRAIG weight) or 'coreset+weight' (selected rows, CRAIG weight x meta weight; 0 if flagged).",
        choices=POLICIES,
    )
    flag_threshold: float | None = option(
        None,
        "noise_score at or above which a row is flagged (above 1 flags nothing). Unset: calibrate it "
        "(see --calibration).",
        min=0,
    )
    calibration: str = option(
        "auto",
        "How the flag threshold is calibrated when --flag-threshold is unset: 'auto' uses "
        "'noise-rate' when the class posterior is reliable (out-of-sample accuracy >= 0.8 on the "
        "trusted rows) and 'trusted-clean' otherwise, unless its noise estimate is below half the "
        "confident joint's (the trusted rows then do not score like the clean train rows, as when "
        "the noise picked the hard rows): 'noise-rate' again; 'trusted-clean' "
        "estimates the noise rate and the false-positive rate at every threshold from the "
        "trusted rows' own (clean) score distribution and maximises the expected F1 (falls back "
        "to 'noise-rate' with fewer than 10 trusted rows); 'noise-rate' flags the number of noisy "
        "rows estimated by the confident joint of the combined class posterior; 'trusted-flips' "
        "maximises the expected F1 on trusted rows scored with synthetic flips (see --flip-repeats).",
        choices=CALIBRATIONS,
    )
    trusted_vote: str = option(
        "auto",
        "The model of the trusted rows alone that votes on each row's class beside the out-of-sample "
        "probs: 'knn' (the --knn-k nearest trusted rows), 'linear' (a logistic regression on the "
        "trusted rows' embeddings; needs >= 5 trusted rows per class) or 'auto' (the one whose "
        "posterior best tells the trusted rows' labels from flips of them; the linear one only while "
        "trusted rows x dimensions x classes <= 2e9). It never sees a noisy "
        "label, so it is not fooled by noise that the probs learn from the noisy labels.",
        choices=TRUSTED_VOTES,
    )
    knn_k: int = option(5, "Trusted nearest neighbours (FAISS, cosine) voting on each row's class.", min=1)
    knn_weight: float | None = option(
        None,
        "Share of the trusted vote (see --trusted-vote) in the combined class posterior (the rest is "
        "the out-of-sample probs). Unset: chosen per run, the value in 0, 0.1, "
        "..., 1 whose posterior best tells the trusted rows' labels from flips of them (see --flip-repeats).",
        min=0, max=1,
    )
    knn_smoothing: float = option(
        1.0, "Laplace pseudo-count spread over the classes in the trusted-neighbour vote.", min=0, finite=True
    )
    meta_weight: float = option(
        0.5,
        "Weight of the meta-weight signal (low weight, often zero) in noise_score relative "
        "to the label signal (weight 1); 0 ignores it.",
        min=0, finite=True,
    )
    meta_min_agreement: float = option(
        0.7,
        "Use the meta weights only if they agree with the label signal: their AUROC for the rows "
        "the label signal alone flags must be at least this (0.5 = chance); 0 always uses them. "
        "Below it they are left out of noise_score and of the train weights (--policy weight "
        "and coreset+weight then weigh unflagged rows 1): weights that do not track the noise "
        "only dilute the score and add variance to training.",
        min=0, max=1,
    )
    include_trusted: bool = option(True, "Also put the trusted rows (clean by definition) in train.parquet.")
    trusted_weight: float = option(
        1.0,
        "Weight of trusted rows in train.parquet (final weights are scaled so that the median "
        "train row has weight 1).",
        min=0, finite=True,
    )
    flip_repeats: int = option(
        0,
        "Synthetic label flips per trusted row for --calibration trusted-flips and for choosing --knn-weight: "
        "0 = each row flipped to every other class once (exact, no randomness); N = N seeded random flips "
        "(for very many classes; also used when trusted rows x classes exceeds 20 million).",
        min=0, note="0 = every other class",
    )
    audit: bool = option(
        True,
        "Also report the data issues of the kNN graph: exact and near duplicates within and across splits "
        "(duplicate_of, duplicate_kind; a test row with a twin in train is leakage), outliers against the "
        "trusted rows (outlier_score, outlier_flag), class overlap and imbalance (summary). One kNN search "
        "over every row with an embedding.",
    )
    fdr: float | None = option(
        None,
        "Also flag at this false-discovery rate: conformal p-values of each train row's label signal against "
        "the trusted rows' (columns noise_pvalue, noise_flag_fdr), Benjamini-Hochberg at level q. Valid when "
        "the trusted rows are exchangeable with the clean train rows (the summary checks it). Unset: off; "
        "noise_flag and train.parquet always use the calibrated threshold.",
        min=0, max=1, min_open=True, max_open=True, finite=True,
    )
    shard_rows: int = option(
        500_000, "Rows per output Parquet shard for curated/train/flags (0: one file).", min=0, note="0: one file"
    )

    def __post_init__(self) -> None:
        check_options(self)
