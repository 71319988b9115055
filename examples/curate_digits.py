"""Curate scikit-learn's digits with winnow's Python API, no CLI: 40% of the training labels are
flipped, 10 images per class are trusted; winnow finds the flipped ones.

    python examples/curate_digits.py [RUN_DIR]      # default runs/demo (what `winnow demo` writes)

The options are the demo's, so this and `winnow demo` share the run directory's cache.
"""

import sys

import numpy as np
import pyarrow.compute as pc

import winnow

run_dir = sys.argv[1] if len(sys.argv) > 1 else "runs/demo"
winnow.ingest(run_dir, source="digits", inject_noise="uniform:0.4", trusted_per_class=10)
winnow.embed(run_dir)                                       # embeddings + cross-fitted probabilities
winnow.select(run_dir, method="facility-location", budget=0.1)  # a 10% coreset with CRAIG weights
winnow.weight(run_dir, method="l2rw", rounds=2, epochs=5)   # per-example weights against the trusted set
export = winnow.export(run_dir, policy="weight")            # noise scores, flags, curated manifests

train = export.table("curated.parquet").filter(pc.field("split") == "train")
flag = np.asarray(train["noise_flag"])
flipped = np.asarray(train["label"]) != np.asarray(train["true_label"])  # the truth: we injected the noise
print(f"flagged {flag.sum()} of {len(flag)} training rows; precision {(flag & flipped).sum() / flag.sum():.3f}, "
      f"recall {(flag & flipped).sum() / flipped.sum():.3f}")
print(f"train on {export.path('train.parquet')} (weight column: flagged rows weigh 0)")
