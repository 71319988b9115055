"""Consume curated manifests: a torch Dataset, a weighted sampler and loss, and the reference trainer."""

from stages.common.lazy import lazy_exports

# Imported on first use, so that reading a stage's parameters does not load torch.
__getattr__, __all__ = lazy_exports(__name__, {
    "TrainResult": "stages.train.core",
    "train_model": "stages.train.core",
    "ManifestDataset": "stages.train.dataset",
    "weighted_loss": "stages.train.dataset",
    "weighted_sampler": "stages.train.dataset",
    "TrainParams": "stages.train.params",
})
