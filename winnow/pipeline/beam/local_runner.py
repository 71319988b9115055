"""winnow's default Beam runner: the DirectRunner's local FnApiRunner, without its Prism attempt.

Since Beam 2.6x the DirectRunner first tries the Prism runner, whose binary it downloads from
GitHub at run time. winnow promises no network at run time unless asked: offline that attempt
costs a DNS failure (a hang behind a firewall that drops packets) and leaves an empty
``/tmp/beam-temp*`` folder per pipeline; online it silently runs on a runner our tests never
exercise. This runner goes straight to the FnApiRunner the DirectRunner falls back to, built the
same way (the pipeline options travel to the SDK workers in the provision info), so the
``direct_num_workers`` / ``direct_running_mode`` options keep their meaning. Users who want
Beam's own choice pass ``--beam-option runner=DirectRunner``.
"""

from __future__ import annotations

from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.portability.api import beam_provision_api_pb2
from apache_beam.runners.portability.fn_api_runner import fn_runner
from apache_beam.runners.portability.portable_runner import JobServiceHandle
from apache_beam.runners.runner import PipelineResult, PipelineRunner


class LocalRunner(PipelineRunner):
    """Runs a batch pipeline on Beam's FnApiRunner (in memory or in local worker processes)."""

    def run_pipeline(self, pipeline, options: PipelineOptions) -> PipelineResult:  # noqa: ANN001
        encoded = JobServiceHandle.encode_pipeline_options(options.get_all_options())
        info = fn_runner.ExtendedProvisionInfo(beam_provision_api_pb2.ProvisionInfo(pipeline_options=encoded))
        return fn_runner.FnApiRunner(provision_info=info).run_pipeline(pipeline, options)
