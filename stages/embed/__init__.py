"""The embed stage: embeddings, cross-fitted out-of-sample probabilities and gradient embeddings."""

from stages.embed.core import EmbedResult, run_embed
from stages.embed.params import EmbedParams

__all__ = ["EmbedParams", "EmbedResult", "run_embed"]
