"""Each stage's I/O on a run directory, one module per stage, called by both executors.

``winnow.pipeline.io.<stage>`` reads the stage's inputs from the run directory (the upstream
artifacts named in :mod:`winnow.pipeline.contract`) and builds and writes its output tables; the
local adapters (:mod:`winnow.pipeline.adapters`) and the Beam executor (:mod:`winnow.pipeline.beam`)
differ only in how they compute between the two.
"""
