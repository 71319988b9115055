"""The reference trainer's two built-in models, under the names it has always used.

They are defined once, in :mod:`winnow.models.small`: ``SmallCNN`` here is
:class:`~winnow.models.small.StandardizedCNN` (``winnow train --model cnn``) and ``MLP`` is
:class:`~winnow.models.small.StandardizedMLP` (``--model mlp``) -- not the embed backbones of the
same names in ``winnow.models.small``, which have no input standardisation (see that module).
Larger backbones come from ``winnow.models.registry`` through ``train_model(..., model_factory=...)``.
"""

from __future__ import annotations

from winnow.models.small import Standardize, StandardizedCNN, StandardizedMLP

SmallCNN = StandardizedCNN
MLP = StandardizedMLP

__all__ = ["MLP", "SmallCNN", "Standardize", "StandardizedCNN", "StandardizedMLP"]
