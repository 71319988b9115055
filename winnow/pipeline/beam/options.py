"""``--beam-option KEY=VALUE`` -> :class:`PipelineOptions`, with offline, deterministic defaults.

With no option the pipeline runs on :class:`~winnow.pipeline.beam.local_runner.LocalRunner` (the
DirectRunner's FnApiRunner, minus its attempt to download the Prism runner) in multi-process
mode (``direct_running_mode=multi_processing``, two workers): SDK workers are local Python
subprocesses, so nothing is downloaded and no job-server jar is needed.
"""

from __future__ import annotations

from collections.abc import Iterable

from apache_beam.options.pipeline_options import PipelineOptions

LOCAL_RUNNER = "winnow.pipeline.beam.local_runner.LocalRunner"
DEFAULTS = {
    "runner": LOCAL_RUNNER,
    "direct_num_workers": "2",
    "direct_running_mode": "multi_processing",
    "default_sdk_harness_log_level": "WARNING",
}


# Runners that read the direct_* options (Beam's DirectRunner passes them to its FnApiRunner).
DIRECT_RUNNERS = {LOCAL_RUNNER, "DirectRunner", "SwitchingDirectRunner", "FnApiRunner"}

# Options winnow itself reads (not Beam's): model_copies = backbone copies per machine (embed).
WINNOW_KEYS = ("model_copies",)


def winnow_options(values: Iterable[str]) -> tuple[dict[str, str], tuple[str, ...]]:
    """Split ``KEY=VALUE`` strings into winnow's own keys (:data:`WINNOW_KEYS`) and Beam's."""
    ours: dict[str, str] = {}
    rest = []
    for raw in values:
        key, _, value = str(raw).partition("=")
        key = key.strip().lstrip("-").replace("-", "_")
        if key in WINNOW_KEYS:
            if not value.isdigit() or int(value) < 1:
                raise ValueError(f"--beam-option {raw!r}: {key} must be a whole number >= 1")
            ours[key] = value
        else:
            rest.append(raw)
    return ours, tuple(rest)


def parse_beam_options(values: Iterable[str]) -> dict[str, str]:
    """``["runner=FlinkRunner", "flink_master=host:8081"]`` -> ordered dict, defaults first.

    Raises ValueError naming the option that is not ``KEY=VALUE``. Keys may be given with or
    without leading dashes and with dashes or underscores (Beam accepts both spellings).
    """
    out = dict(DEFAULTS)
    given: dict[str, str] = {}
    for raw in values:
        key, sep, value = str(raw).partition("=")
        key = key.strip().lstrip("-")
        if not sep or not key:
            raise ValueError(f"--beam-option {raw!r}: expected KEY=VALUE, e.g. runner=FlinkRunner")
        given[key.replace("-", "_")] = value
    if given.get("runner", LOCAL_RUNNER) not in DIRECT_RUNNERS:  # others ignore direct_*; the log level is for all
        for key in ("direct_num_workers", "direct_running_mode"):
            out.pop(key)
    out.update(given)
    return out


def pipeline_options(values: Iterable[str] = ()) -> PipelineOptions:
    """Beam :class:`PipelineOptions` from ``KEY=VALUE`` strings (see :func:`parse_beam_options`)."""
    flags = [f"--{k}={v}" for k, v in parse_beam_options(winnow_options(values)[1]).items()]
    return PipelineOptions(flags)
