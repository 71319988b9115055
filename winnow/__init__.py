"""winnow: per-example weights, noisy-label flags and coresets for a noisily labelled training set.

``import winnow`` is the Python API, loaded lazily (importing winnow loads neither torch nor
FAISS):

- the stages on a run directory, with the CLI's options as keyword arguments and the same
  cache, atomic writes and ``stage.json``: :func:`ingest`, :func:`embed`, :func:`select`,
  :func:`weight`, :func:`export`, :func:`train`, :func:`evaluate`, :func:`report`, and
  :func:`run` (a TOML config) and :func:`demo`; each returns a :class:`StageRun`;
- the pure cores on arrays: :func:`coreset`, :func:`crossfit_probs`, :func:`find_noisy_labels`,
  :func:`example_weights`, :func:`per_example_alignment`;
- for your trainer: :class:`ManifestDataset`, :func:`weighted_sampler`, :func:`weighted_loss`;
- :func:`as_arrow_table`: a pandas, polars or pyarrow table as a pyarrow one (every entry that
  takes a table accepts the three).
"""

from winnow.stages.common.lazy import lazy_exports

_STAGES = "winnow.pipeline.api"
_CORES = "winnow.stages.api"

__getattr__, __all__ = lazy_exports(__name__, {
    **{name: _STAGES for name in ("ingest", "embed", "select", "weight", "export", "train", "evaluate", "report",
                                  "run", "demo", "StageRun")},
    **{name: _CORES for name in ("coreset", "crossfit_probs", "find_noisy_labels", "example_weights", "NoiseFlags",
                                 "as_arrow_table")},
    "per_example_alignment": "winnow.stages.weight.alignment",
    "ManifestDataset": "winnow.stages.train.dataset",
    "weighted_sampler": "winnow.stages.train.dataset",
    "weighted_loss": "winnow.stages.train.dataset",
})


def __dir__() -> list[str]:
    return __all__
