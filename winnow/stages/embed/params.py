"""Options of the embed stage (one field per CLI flag / TOML key)."""

from __future__ import annotations

from dataclasses import dataclass

from winnow.stages.common.params import check_options, option


@dataclass(frozen=True)
class EmbedParams:
    """Parameters of :func:`winnow.stages.embed.core.run_embed`."""

    model: str = option(
        "auto",
        "Backbone: 'auto' (small CNN trained by warmup for images <= 32 px, else resnet18 with warmup), "
        "small_cnn, mlp (on the flattened pixels of --image-size images: not train's --model mlp, which runs "
        "on a feature column), resnet20, resnet32, any torchvision classifier (resnet18, resnet50, vit_b_16, ...), "
        "or 'features' (use the ingest feature table, no network).",
    )
    weights: str = option(
        "",
        "Local state_dict file for the backbone (read with weights_only=True; never downloaded); "
        "'none' = random initialisation. Torchvision models need it unless --warmup > 0.",
    )
    model_file: str = option(
        "",
        "TorchScript file (torch.jit.save) to use instead of --model; its output is the embedding or a tuple "
        "(embedding, logits). Other formats (torch.export .pt2, pickled modules) can run code stored in the "
        "file when loaded and are refused.",
    )
    image_size: int = option(0, "Side images are resized/centre-cropped to; 0 = the model's default.",
                             min=0, note="0 = the model's default")
    batch_size: int = option(256, "Images per forward pass.", min=1)
    shard_size: int = option(8192, "Rows per checkpointed shard (a killed run resumes from the last shard).", min=1)
    num_workers: int = option(
        -1,
        "DataLoader decode workers; -1 = auto (CUDA: cores - 1, at most 8; CPU: 0 up to 4 cores, "
        "else cores // 4).",
        min=-1, note="-1 = auto",
    )
    amp: bool = option(True, "Mixed precision (bfloat16) on CUDA; ignored on CPU.")
    folds: int = option(
        5,
        "Cross-fitting folds for the probabilities (>= 2): out of sample for the head; a --warmup backbone has "
        "trained on every label unless --crossfit backbone.",
        min=2,
    )
    crossfit: str = option(
        "head",
        "What the folds hold out for the probs of labelled rows: 'head' (fast; the --warmup backbone saw every "
        "label) or 'backbone' (one more warm-up per fold without that fold's labels; that network and a head on "
        "its embeddings score the fold: out of sample, at --folds times the warm-up's cost; for small data or "
        "long warm-ups).",
        choices=("head", "backbone"),
    )
    head: str = option("linear", "Cross-fitting head on the embeddings.", choices=("linear", "mlp"))
    head_hidden: int = option(256, "Hidden units of the mlp head.", min=1)
    head_iters: int = option(100, "L-BFGS iterations to fit each cross-fitting head.", min=1)
    head_weight_decay: float = option(1e-3, "L2 penalty of the cross-fitting head's weights.", min=0, finite=True)
    grad_kind: str = option(
        "full",
        "Gradient embedding: 'full' = (softmax(z) - onehot(y)) (x) h, the last-layer gradient; "
        "'logit' = softmax(z) - onehot(y) alone (CRAIG's proxy).",
        choices=("full", "logit"),
    )
    grad_dim: int = option(0, "Project the gradient embedding to this many dims (seeded Gaussian); 0 = no projection.",
                           min=0, note="0 = no projection")
    warmup: int = option(
        -1,
        "Epochs to train the backbone on train+trusted before embedding; -1 = auto "
        "(10 for a randomly initialised network, 0 with --weights or --model-file). Large datasets "
        "want more: 20 gave better flags on 25k CIFAR-10 images and worse on 1.8k digits. The warm-up sees "
        "every label, so long ones memorise noisy labels and the probs then agree with them.",
        min=-1, note="-1 = auto",
    )
    warmup_lr: float = option(0.05, "Warmup SGD learning rate (momentum 0.9, cosine decay); lower it if the warm-up "
                              "diverges.", min=0, min_open=True, finite=True)
    warmup_batch_size: int = option(128, "Warmup mini-batch size.", min=2,
                                    note="BatchNorm needs two examples per training batch")
    warmup_weight_decay: float = option(5e-4, "Warmup SGD weight decay.", min=0, finite=True)
    augment: str = option(
        "auto",
        "Warmup augmentation: natural = random crop + flip, digits = small shifts, none; auto picks by model.",
        choices=("auto", "natural", "digits", "none"),
    )

    def validate(self) -> None:
        """Raise ValueError naming the option for any value the stage cannot use; the CLI calls it
        when it reads the options (bad usage, exit 2), the stage again before it runs."""
        check_options(self)
