"""Options of the weight stage: one frozen dataclass, from which the CLI and TOML config are made."""

from __future__ import annotations

from dataclasses import dataclass

from winnow.stages.common.params import check_options, option

METHODS = ("l2rw", "mwn", "bilevel", "soseleto", "none")


@dataclass(frozen=True)
class WeightParams:
    """All options of ``winnow weight`` (defaults follow the papers where they give one)."""

    method: str = option("l2rw", "Weighting method: Learning to Reweight (Ren et al. 2018), "
                         "Meta-Weight-Net (Shu et al. 2019), Deep Bilevel Learning (Jenni & Favaro "
                         "2018), SOSELETO (Litany & Freedman), or none (plain training, the baseline).",
                         choices=METHODS)
    rounds: int = option(1, "Number of weighting rounds; each round trains for --epochs epochs and "
                         "gets its own round_<r> column.", min=1)
    epochs: int = option(5, "Epochs per round.", min=1)
    round_init: str = option("continue", "Start of each round after the first: continue from the "
                             "current model, or restart from a fresh initialisation (weights, alphas "
                             "and the Meta-Weight-Net persist).", choices=("continue", "restart"))
    trainable: str = option("head", "What is trained: a head on the frozen embeddings (fast on CPU) "
                            "or the full backbone plus head on the images (for GPUs).",
                            choices=("head", "full"))
    head: str = option("linear", "Head on the embeddings for --trainable head.", choices=("linear", "mlp"))
    head_hidden: int = option(256, "Hidden width of the mlp head.", min=1)
    subset: str = option("all", "Train on all training examples, or on the select stage's coreset with "
                         "its CRAIG weights multiplying the losses.", choices=("all", "coreset"))
    reselect_every: int = option(0, "With --subset coreset: re-select the coreset from the current "
                                 "model's gradient embeddings every this many epochs (0: never).", min=0)
    meta_interval: int = option(1, "Meta-Weight-Net: update the weighting net every this many steps.", min=1)
    lr: float | None = option(None, "Learning rate of the model's momentum SGD (also the look-ahead step size). "
                              "Default: 0.03 for --trainable head (on its conditioned inputs: at 0.1 the noisy "
                              "steps of a hard task turned Meta-Weight-Net's weights upside down), the papers' "
                              "0.1 for full.", min=0, min_open=True)
    lr_schedule: str = option("cosine", "Learning-rate schedule within each round.",
                              choices=("cosine", "constant"))
    momentum: float = option(0.9, "SGD momentum.", min=0)
    weight_decay: float | None = option(None, "SGD weight decay. Default: 5e-3 for --trainable head (it "
                                        "keeps the head from saturating, which would zero the trusted "
                                        "gradient every method reads), the papers' 5e-4 for full.", min=0)
    batch_size: int = option(100, "Training examples per step.", min=1)
    trusted_batch_size: int | None = option(None, "Trusted examples per meta step (l2rw, mwn, soseleto; Deep "
                                                  "Bilevel's validation batch when each mini-batch is one example). "
                                                  "Default: every trusted row with --trainable head (cheap in closed form, "
                                                  "and an exact trusted gradient keeps the weights informative once "
                                                  "the head fits) except for mwn, whose trusted gradient only trains "
                                                  "its weighting net (the paper's 100, the same weights at 0.6x the "
                                                  "step); 100 with --trainable full.", min=1)
    bilevel_batches: int | None = option(None, "Deep Bilevel: mini-batches per step (k); the step's batch is "
                                               "split into k mini-batches sharing one label distribution. Default: one "
                                               "per example with --trainable head (per-example weights, in closed "
                                               "form), the paper's 8 with --trainable full.", min=1)
    bilevel_mu: float = option(0.01, "Deep Bilevel: mu in omega_i = <g_V, g_i> / (<g_i, g_i> + mu).", min=0)
    bilevel_validation: str = option("trusted", "Deep Bilevel: take the validation mini-batch from the "
                                     "trusted set (winnow's default) or from the noisy training data "
                                     "(the paper's mode).", choices=("trusted", "train"))
    lr_alpha: float = option(10.0, "SOSELETO: step size of the per-example alpha update "
                             "alpha <- clip(alpha + lr_alpha * lr * d, 0, 1).", min=0)
    alpha_init: float = option(0.5, "SOSELETO: initial alpha of every training example.", min=0, max=1)
    mwn_lr: float = option(1e-3, "Meta-Weight-Net: Adam learning rate of the weighting net.", min=0, min_open=True)
    mwn_weight_decay: float = option(1e-4, "Meta-Weight-Net: Adam weight decay of the weighting net.", min=0)
    mwn_hidden: int = option(100, "Meta-Weight-Net: hidden width of the weighting net (paper: 100).", min=1)

    # The defaults that depend on --trainable: a head is cheap in closed form and saturates without
    # a stronger decay; a full network keeps the papers' values (docs/design-notes.md).
    def resolved_lr(self) -> float:
        """--lr, or 0.03 for a head (docs/design-notes.md: "The head's learning rate") and the
        papers' 0.1 for a full network."""
        if self.lr is not None:
            return self.lr
        return 0.03 if self.trainable == "head" else 0.1

    def resolved_weight_decay(self) -> float:
        """--weight-decay, or 5e-3 for a head and the papers' 5e-4 for a full network."""
        if self.weight_decay is not None:
            return self.weight_decay
        return 5e-3 if self.trainable == "head" else 5e-4

    def resolved_trusted_batch_size(self, trusted_rows: int) -> int:
        """--trusted-batch-size, or every trusted row for a head (an exact trusted gradient: L2RW,
        Deep Bilevel and SOSELETO read it per example) and the papers' 100 for a full network and
        for Meta-Weight-Net, whose weight is a function of the loss that the trusted gradient
        only trains (docs/design-notes.md)."""
        if self.trusted_batch_size is not None:
            return self.trusted_batch_size
        if self.trainable == "head" and self.method != "mwn":
            return trusted_rows
        return 100

    def resolved_bilevel_batches(self, batch: int) -> int:
        """--bilevel-batches, or one mini-batch per example of the ``batch`` for a head and the
        paper's 8 for a full network."""
        if self.bilevel_batches is not None:
            return self.bilevel_batches
        return batch if self.trainable == "head" else 8

    def validate(self) -> None:
        """Raise ValueError naming the option when a value breaks its declared choices or range."""
        check_options(self)
