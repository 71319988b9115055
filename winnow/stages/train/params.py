"""Options of the reference trainer (``winnow train``): one field per CLI flag and TOML key."""

from __future__ import annotations

from dataclasses import dataclass

from winnow.stages.common.params import check_options, option

MODELS = ("auto", "cnn", "mlp")
WEIGHTINGS = ("sampler", "loss", "none")
SCHEDULES = ("cosine", "constant")


@dataclass(frozen=True)
class TrainParams:
    """Reference trainer options."""

    model: str = option(
        "auto",
        "Built-in model: cnn (winnow.models' StandardizedCNN: four conv blocks, any image size), mlp "
        "(StandardizedMLP: two hidden BatchNorm layers on a feature column, or on the flattened pixels; not "
        "embed's --model mlp) or auto (mlp with --features, cnn for images up to 32 px; larger images need "
        "--model cnn or --features).",
        choices=MODELS,
    )
    epochs: int = option(20, "Passes over the training manifest.", min=1)
    batch_size: int = option(128, "Examples per optimisation step.", min=2, note="BatchNorm trains on two or more")
    lr: float = option(0.05, "Peak SGD learning rate.", min=0, min_open=True)
    momentum: float = option(0.9, "SGD (Nesterov) momentum.", min=0, max=1, max_open=True)
    weight_decay: float = option(5e-4, "L2 weight decay.", min=0)
    schedule: str = option("cosine", "Learning-rate schedule over all steps.", choices=SCHEDULES)
    weighting: str = option(
        "sampler",
        "How the manifest's weight is used: sampler (draw rows in proportion to weight), "
        "loss (weighted cross-entropy on shuffled rows) or none (ignore weights).",
        choices=WEIGHTINGS,
    )
    features: str = option("", "Train on this vector column (e.g. embedding) instead of the images; '' = images.")
    hidden: int = option(256, "Hidden width of the MLP.", min=1)
    width: int = option(32, "Channels of the CNN's first block (doubled per block).", min=1)
    augment: bool = option(False, "Random 4-px-padded crops and horizontal flips of images (natural images, not digits).")
    eval_batch_size: int = option(1024, "Examples per evaluation forward pass.", min=1)

    def __post_init__(self) -> None:
        check_options(self)
