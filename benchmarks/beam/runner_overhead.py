"""Start-up cost of one trivial pipeline: winnow's default LocalRunner vs Beam's DirectRunner
(which first tries to download the Prism runner), interleaved, 3 reps each.

    python -m benchmarks.beam.runner_overhead
"""

from __future__ import annotations

import logging
import time

import apache_beam as beam

from winnow.pipeline.beam.options import pipeline_options

RUNNERS = {"LocalRunner (default)": [], "DirectRunner": ["runner=DirectRunner"]}


def main(reps: int = 3) -> None:
    logging.getLogger().setLevel(logging.ERROR)
    times: dict[str, list[float]] = {name: [] for name in RUNNERS}
    for _ in range(reps):
        for name, options in RUNNERS.items():
            t = time.perf_counter()
            with beam.Pipeline(options=pipeline_options(options)) as p:
                _ = p | beam.Create(list(range(100))) | beam.Map(lambda x: x + 1)
            times[name].append(time.perf_counter() - t)
    for name, values in times.items():
        print(f"{name}: median {sorted(values)[len(values) // 2]:.2f} s ({', '.join(f'{v:.2f}' for v in values)})")


if __name__ == "__main__":
    main()
