"""The weight stage: per-example weights from L2RW, Meta-Weight-Net, Deep Bilevel or SOSELETO.

Entry point: :func:`winnow.stages.weight.core.run_weight` with :class:`winnow.stages.weight.params.WeightParams`.
All four methods share one kernel, :func:`winnow.stages.weight.alignment.per_example_alignment`.
"""
