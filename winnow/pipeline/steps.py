"""The table of steps: each stage as the pipeline sees it (its options, its upstream stages from
:mod:`winnow.pipeline.contract`, its local adapter), and the per-stage rules of ``winnow run``.

The stage's I/O is in :mod:`winnow.pipeline.io`, the local adapters in
:mod:`winnow.pipeline.adapters`, the cache digests in :mod:`winnow.pipeline.runner`, the demo in
:mod:`winnow.pipeline.demo`, the run-level options in :mod:`winnow.pipeline.settings`. The
names re-exported at the bottom are for code written against this module before it was split.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from winnow.pipeline import adapters
from winnow.pipeline.contract import CONTRACTS
from winnow.pipeline.io.ingest import load_manifest
from winnow.pipeline.rundir import STAGE_JSON, RunDir
from winnow.pipeline.runner import StageContext, outdated_input
from winnow.stages.common.rows import usable_mask


@dataclass(frozen=True)
class Step:
    """A stage as the pipeline sees it: its parameters, inputs and adapter."""

    name: str
    params_cls: type
    adapter: Callable[[StageContext, Any], dict[str, Any]]
    summary: str

    @property
    def required(self) -> tuple[str, ...]:
        """Upstream stages that must have completed (:mod:`winnow.pipeline.contract`)."""
        return CONTRACTS[self.name].required

    @property
    def optional(self) -> tuple[str, ...]:
        """Upstream stages used when present."""
        return CONTRACTS[self.name].optional


def _steps() -> dict[str, Step]:
    from winnow.stages.embed.params import EmbedParams
    from winnow.stages.export.params import ExportParams
    from winnow.stages.ingest.params import IngestParams
    from winnow.stages.select.params import SelectParams
    from winnow.stages.train.params import TrainParams
    from winnow.stages.weight.params import WeightParams

    a = adapters
    return {
        s.name: s
        for s in [
            Step("ingest", IngestParams, a.ingest_adapter, "Read a source into a validated manifest with a trusted split."),
            Step("embed", EmbedParams, a.embed_adapter, "Embeddings, cross-fitted class probabilities and gradient embeddings."),
            Step("select", SelectParams, a.select_adapter,
                 "Per-class coreset: facility location or set cover, with CRAIG weights."),
            Step("weight", WeightParams, a.weight_adapter,
                 "Per-example weights from L2RW, Meta-Weight-Net, Deep Bilevel or SOSELETO rounds."),
            Step("export", ExportParams, a.export_adapter,
                 "Noise scores, flags and suggested labels; curated, train and flags manifests."),
            Step("train", TrainParams, a.train_adapter, "Train the reference model on the curated train manifest."),
            Step("evaluate", a.EvaluateParams, a.evaluate_adapter,
                 "Score the flags against the truth and compare downstream accuracy with plain training."),
            Step("report", a.ReportParams, a.report_adapter, "Write a self-contained HTML report."),
        ]
    }


STEPS = _steps()
assert tuple(STEPS) == tuple(CONTRACTS), "one step per stage of the contract, in its order"
DEFAULT_PLAN = tuple(STEPS)

# What varies with the CPU thread count, by stage: a stage named here has the count in its cache key
# and this line in stage.json's ``thread_dependence``; ingest and report compute nothing that
# depends on it. Figures: the digits demo on CPU, each stage run alone on the same inputs with
# --threads 1 and 2 (python -m benchmarks.reliability.threads; docs/design-notes.md).
# The stages that run torch; the others never load it (0.65 GB of resident memory for its CUDA build).
TORCH_STAGES = frozenset({"embed", "weight", "train", "evaluate"})

THREAD_DEPENDENCE: dict[str, str] = {
    "embed": "the warm-up's training reductions (oneDNN convolution weight gradients, MKL GEMM) and the "
             "cross-fitted heads; a warm-up amplifies them: embedding max |diff| 0.245, probs 0.517, every row",
    "select": "FAISS's BLAS inner products (about 2e-7), which can reorder near-ties of the kNN graph; IVF "
              "training and HNSW insertion also; the demo's coreset was identical",
    "weight": "the training reductions (MKL GEMM; oneDNN convolutions with --trainable backbone): linear head, "
              "weight max |diff| 2.4e-6, weight_last 1.0e-5",
    "export": "FAISS's BLAS inner products in the trusted-kNN vote: noise_score max |diff| 6e-8, same flags",
    "train": "the training reductions (oneDNN convolution weight gradients, MKL GEMM): other weights",
    "evaluate": "trains as train does: the downstream accuracies",
}


def skip_reason(run: RunDir, step: Step, params: Any) -> str | None:
    """Why ``winnow run`` skips ``step`` on this run's data, with what would make it run; None to run it.

    Only two stages depend on what the data holds rather than on earlier stages: ``evaluate``
    needs the truth (``true_label``, which only ``--inject-noise`` records, or ``--truth``) and
    ``train`` needs images (or a feature column). A user's own images without a truth column, or a
    feature table, must still reach ``report``.
    """
    if step.name not in ("evaluate", "train") or run.record("ingest") is None:
        return None
    manifest = load_manifest(run)
    usable = usable_mask(manifest)
    if step.name == "evaluate" and not params.truth and manifest["true_label"].null_count == manifest.num_rows:
        return ("no truth to score the flags against: the manifest has no true_label (only ingest's --inject-noise "
                "records one); to evaluate, set [evaluate] truth = \"PATH\" (a table of id and true label)")
    if step.name == "train" and not params.features:
        has_image = manifest["image"].is_valid().to_numpy(zero_copy_only=False) | manifest["uri"].is_valid().to_numpy(
            zero_copy_only=False)
        if not (has_image & usable).any():
            return ("the manifest has no images (ingest read a feature table); to train on the embeddings, set "
                    "[train] features = \"embedding\"")
    return None


def discard_outdated(run: RunDir, stage: str) -> bool:
    """Remove ``stage``'s folder if its outputs come from inputs that have changed since (``winnow
    run`` skips the stage this time); a later stage would otherwise refuse to mix them with the new
    ones, or show them as if they were about this data. ``stage.json`` goes first, so that an
    interrupted removal leaves a folder that counts as absent. Returns whether it removed one."""
    if run.record(stage) is None or outdated_input(run, stage) is None:
        return False
    (run.stage_dir(stage) / STAGE_JSON).unlink()
    shutil.rmtree(run.stage_dir(stage), ignore_errors=True)
    return True


# Names of this module before the split that code outside the package still imports from here
# (benchmarks/quality/headroom.py, benchmarks/reliability/threads.py, tests/embed, tests/report: the
# last patches ``load_curated`` here, where ``winnow inspect`` looks it up).
from winnow.pipeline.demo import DEMO_CONFIG  # noqa: E402
from winnow.pipeline.io.embed import features_table, with_feature_column  # noqa: E402
from winnow.pipeline.io.export import load_curated  # noqa: E402
from winnow.pipeline.io.train import test_table  # noqa: E402
from winnow.stages.common.arrow import class_names  # noqa: E402

__all__ = [
    "DEFAULT_PLAN", "DEMO_CONFIG", "STEPS", "THREAD_DEPENDENCE", "TORCH_STAGES", "Step", "class_names", "discard_outdated",
    "features_table", "load_curated", "load_manifest", "outdated_input", "skip_reason", "test_table",
    "with_feature_column",
]
