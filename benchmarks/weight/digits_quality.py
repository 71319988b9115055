"""Quality of each weighting method on scikit-learn digits with 40% uniform label noise.

Noise always flips to another class (the L2RW / Meta-Weight-Net codes may redraw the true
class, so their "40%" changes about 36% of labels). 100 trusted images (10 per class) are clean;
400 held-out images are the test set; an MLP head (64-256-10) trains on raw pixels / 16.
Reports final and best test accuracy of each method against `none`, and the AUROC of the
recorded weights (`weight`, and 1 - `zero_fraction`) as a clean-vs-flipped detector.

    .venv/bin/python -m benchmarks.weight.digits_quality [--epochs 30] [--seeds 3]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.metrics import roc_auc_score

from winnow.stages.weight.core import run_weight
from winnow.stages.weight.params import METHODS, WeightParams


def split(seed: int):
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(y))
    x, y = x[perm], y[perm]
    trusted = np.concatenate([np.where(y == c)[0][:10] for c in range(10)])
    rest = np.setdiff1d(np.arange(len(y)), trusted)
    test, train = rest[:400], rest[400:]
    noisy = y[train].copy()
    flip = rng.random(len(train)) < 0.4
    noisy[flip] = (noisy[flip] + rng.integers(1, 10, flip.sum())) % 10
    t = torch.from_numpy
    return (t(x[train]), t(noisy), t(x[trusted]), t(y[trusted]), t(x[test]), t(y[test])), flip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = {m: [] for m in METHODS}
    for seed in range(args.seeds):
        (x, y, tx, ty, test_x, test_y), flip = split(seed)
        for method in METHODS:
            accs: list[float] = []

            def on_epoch(epoch, model, accs=accs, test_x=test_x, test_y=test_y):
                model.eval()
                with torch.no_grad():
                    accs.append(float((model(test_x).argmax(1) == test_y).float().mean()))
                model.train()

            p = WeightParams(method=method, epochs=args.epochs, head="mlp")
            t0 = time.perf_counter()
            r = run_weight(x, y, tx, ty, p, num_classes=10, seed=seed, on_epoch_end=on_epoch)
            secs = time.perf_counter() - t0
            w = r.columns["weight"]
            auc_w = roc_auc_score(~flip, w) if np.ptp(w) > 0 else 0.5
            zf = r.columns["zero_fraction"]
            auc_z = roc_auc_score(~flip, 1 - zf) if np.ptp(zf) > 0 else 0.5
            rows[method].append((accs[-1], max(accs), auc_w, auc_z, secs))
    print(f"digits: {len(x)} train (40% flipped), 100 trusted, 400 test; MLP head; {args.epochs} epochs; "
          f"mean over {args.seeds} seeds\n")
    print("| method | final test acc | best test acc | AUROC weight | AUROC 1-zero_fraction | seconds |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for method, vals in rows.items():
        a = np.array(vals).mean(0)
        print(f"| {method} | {a[0]:.3f} | {a[1]:.3f} | {a[2]:.3f} | {a[3]:.3f} | {a[4]:.1f} |")


if __name__ == "__main__":
    main()
