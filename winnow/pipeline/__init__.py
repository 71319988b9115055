"""winnow orchestration: CLI, config, run directory, artifacts, cache, executors."""
