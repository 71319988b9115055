"""Consume curated manifests: a torch Dataset, a weighted sampler and loss, and the reference trainer."""

from stages.train.core import TrainResult, train_model
from stages.train.dataset import ManifestDataset, weighted_loss, weighted_sampler
from stages.train.params import TrainParams

__all__ = ["ManifestDataset", "TrainParams", "TrainResult", "train_model", "weighted_loss", "weighted_sampler"]
