"""The weight stage: per-example weights from L2RW, Meta-Weight-Net, Deep Bilevel or SOSELETO.

Entry point: :func:`stages.weight.core.run_weight` with :class:`stages.weight.params.WeightParams`.
All four methods share one kernel, :func:`stages.weight.alignment.per_example_alignment`.
"""
