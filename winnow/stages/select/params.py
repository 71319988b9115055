"""Options of the select stage: one frozen dataclass, each field a CLI flag and a TOML key."""

from __future__ import annotations

from dataclasses import dataclass

from winnow.stages.common.params import check_options, option


@dataclass(frozen=True)
class SelectParams:
    """Parameters of coreset selection (facility location or set cover, per class)."""

    method: str = option(
        "facility-location",
        "Selection algorithm: facility location (CRAIG medoids) or greedy set cover of radius-r balls.",
        choices=("facility-location", "set-cover"),
    )
    budget: float = option(
        0.1,
        "Size of the coreset: a fraction of the eligible train rows if < 1, else a whole count of rows "
        "(budget 2 = 2 rows, raised to one per class: the output names it a row count). "
        "For set-cover, 0 means no limit (pick until every point is covered).",
        min=0,
    )
    per_class_budget: str = option(
        "proportional",
        "How the budget is split over classes: in proportion to class size (CRAIG) or equally.",
        choices=("proportional", "equal"),
    )
    space: str = option(
        "embedding",
        "Which vectors of features.parquet to select on.",
        choices=("embedding", "grad_embedding"),
    )
    index: str = option(
        "auto",
        "FAISS index for neighbour search: exact (flat), ivf, hnsw, or auto "
        "(exact up to --exact-threshold rows per class, ivf above).",
        choices=("exact", "ivf", "hnsw", "auto"),
    )
    k: int = option(10, "Neighbours per point in the kNN similarity graph (facility location).", min=1)
    epsilon: float = option(
        0.0,
        "Stochastic greedy epsilon in (0, 1): each step scans (n/budget)*log(1/epsilon) random "
        "candidates. 0 = lazy greedy, which picks exactly what naive greedy picks.",
        min=0, max=1, max_open=True,
    )
    radius: float = option(
        0.0,
        "Set-cover ball radius in L2 distance between L2-normalised vectors (0..2). "
        "0 = per class, the median distance to the k-th nearest neighbour (at least 4.9e-4). "
        "Balls are inclusive: exact duplicates always share one.",
        min=0, max=2, note="an L2 distance between unit vectors",
    )
    set_cover_weighting: str = option(
        "count",
        "Set-cover gain of a candidate: number of uncovered points in its ball (count), or their "
        "Epanechnikov kernel density 1 - d^2/r^2 (density).",
        choices=("count", "density"),
    )
    exact_threshold: int = option(
        20000, "With --index auto: classes with at most this many rows use exact search.", min=1
    )
    nlist: int = option(0, "IVF cells per class; 0 = 4*sqrt(n) (at least 1).", min=0)
    nprobe: int = option(32, "IVF cells visited per query (higher = better recall, slower).", min=1)
    hnsw_m: int = option(32, "HNSW graph degree M.", min=1)
    ef_search: int = option(128, "HNSW efSearch (higher = better recall, slower).", min=1)
    workers: int = option(
        0,
        "Classes processed in parallel threads (FAISS releases the GIL); 0 = one per CPU core, "
        "1 = one class at a time. Results do not depend on it.",
        min=0,
    )

    def __post_init__(self) -> None:
        check_options(self)  # the declared choices and ranges; below, the rules that join two options
        if self.budget == 0 and self.method != "set-cover":
            raise ValueError("option --budget 0 (no limit) is only valid with --method set-cover")
        if self.budget >= 1 and self.budget != int(self.budget):
            raise ValueError(f"option --budget >= 1 is a count and must be whole, got {self.budget}")
