"""winnow: per-example weights, noisy-label flags and coresets for a noisily labelled training set."""
