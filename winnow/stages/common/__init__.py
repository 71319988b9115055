"""Helpers shared by all stages: the artifact schema and Arrow <-> numpy conversion."""
