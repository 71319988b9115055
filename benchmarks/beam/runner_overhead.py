"""Start-up cost of one trivial pipeline: winnow's default LocalRunner vs Beam's DirectRunner
(which first tries to download the Prism runner), interleaved, 3 reps each.

    python -m benchmarks.beam.runner_overhead
"""

import logging
import time

import apache_beam as beam

from pipeline.beam.options import pipeline_options

logging.getLogger().setLevel(logging.ERROR)
res = {"LocalRunner (default)": [], "DirectRunner": []}
for rep in range(3):
    for name, opts in (("LocalRunner (default)", []), ("DirectRunner", ["runner=DirectRunner"])):
        t = time.perf_counter()
        with beam.Pipeline(options=pipeline_options(opts)) as p:
            p | beam.Create(list(range(100))) | beam.Map(lambda x: x + 1)
        res[name].append(time.perf_counter() - t)
for k, v in res.items():
    print(f"{k}: median {sorted(v)[1]:.2f} s  {['%.2f' % x for x in v]}")
