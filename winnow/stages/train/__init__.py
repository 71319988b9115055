"""Consume curated manifests: a torch Dataset, a weighted sampler and loss, and the reference trainer."""

from winnow.stages.common.lazy import lazy_exports

# Imported on first use, so that reading a stage's parameters does not load torch.
__getattr__, __all__ = lazy_exports(__name__, {
    "TrainResult": "winnow.stages.train.core",
    "train_model": "winnow.stages.train.core",
    "ManifestDataset": "winnow.stages.train.dataset",
    "weighted_loss": "winnow.stages.train.dataset",
    "weighted_sampler": "winnow.stages.train.dataset",
    "TrainParams": "winnow.stages.train.params",
})
