"""The embed stage: embeddings, cross-fitted out-of-sample probabilities and gradient embeddings."""

from winnow.stages.common.lazy import lazy_exports

# Imported on first use, so that reading a stage's parameters does not load torch.
__getattr__, __all__ = lazy_exports(__name__, {
    "EmbedResult": "winnow.stages.embed.core",
    "run_embed": "winnow.stages.embed.core",
    "EmbedParams": "winnow.stages.embed.params",
})
