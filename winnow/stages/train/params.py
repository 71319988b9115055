"""Options of the reference trainer (``winnow train``): one field per CLI flag and TOML key."""

from __future__ import annotations

from dataclasses import dataclass

from winnow.stages.common.params import option, validate_choices

MODELS = ("auto", "cnn", "mlp")
WEIGHTINGS = ("sampler", "loss", "none")
SCHEDULES = ("cosine", "constant")


@dataclass(frozen=True)
class TrainParams:
    """Reference trainer options."""

    model: str = option(
        "auto",
        "Built-in model: cnn (winnow.models' SmallCNN, four conv blocks, any image size), mlp (two hidden "
        "BatchNorm layers on a feature column, or on the flattened pixels) or auto (mlp with --features, "
        "cnn for images up to 32 px; larger images need --model cnn or --features).",
        choices=MODELS,
    )
    epochs: int = option(20, "Passes over the training manifest.")
    batch_size: int = option(128, "Examples per optimisation step.")
    lr: float = option(0.05, "Peak SGD learning rate.")
    momentum: float = option(0.9, "SGD (Nesterov) momentum.")
    weight_decay: float = option(5e-4, "L2 weight decay.")
    schedule: str = option("cosine", "Learning-rate schedule over all steps.", choices=SCHEDULES)
    weighting: str = option(
        "sampler",
        "How the manifest's weight is used: sampler (draw rows in proportion to weight), "
        "loss (weighted cross-entropy on shuffled rows) or none (ignore weights).",
        choices=WEIGHTINGS,
    )
    features: str = option("", "Train on this vector column (e.g. embedding) instead of the images; '' = images.")
    hidden: int = option(256, "Hidden width of the MLP.")
    width: int = option(32, "Channels of the CNN's first block (doubled per block).")
    augment: bool = option(False, "Random 4-px-padded crops and horizontal flips of images (natural images, not digits).")
    eval_batch_size: int = option(1024, "Examples per evaluation forward pass.")

    def __post_init__(self) -> None:
        validate_choices(self)
        for name in ("epochs", "batch_size", "hidden", "width", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"option --{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.batch_size < 2:
            raise ValueError(f"option --batch-size must be >= 2 (BatchNorm trains on two or more), got {self.batch_size}")
        if self.lr <= 0:
            raise ValueError(f"option --lr must be > 0, got {self.lr}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"option --momentum must be in [0, 1), got {self.momentum}")
        if self.weight_decay < 0:
            raise ValueError(f"option --weight-decay must be >= 0, got {self.weight_decay}")
