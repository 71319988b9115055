"""winnow's stages: one package per stage, each with a pure core (arrays and tables in and out).

Stages never import :mod:`pipeline`; the pipeline's adapters read and write the artifacts and
call these cores.
"""
