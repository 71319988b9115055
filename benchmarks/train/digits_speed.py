"""Wall time of the reference trainer on scikit-learn's digits (goal: a few seconds per run).

Usage: .venv/bin/python -m benchmarks.train.digits_speed
Trains the default TrainParams (small CNN, 20 epochs, weighted sampler) on 1300 digit images and
evaluates on the other 497, at 1 and 2 torch threads; also times one epoch of the README's
three-line DataLoader loop (per-item PNG decoding) against the trainer's pre-decoded batches.
"""

from __future__ import annotations

import time

import numpy as np
import pyarrow as pa
import torch
from sklearn.datasets import load_digits
from torch.utils.data import DataLoader

from winnow.stages.common.arrow import with_metadata
from winnow.stages.common.images import encode_png
from winnow.stages.train import ManifestDataset, TrainParams, train_model, weighted_loss, weighted_sampler


def _tables() -> tuple[pa.Table, pa.Table]:
    digits = load_digits()
    images = (digits.images * 255 / 16).clip(0, 255).astype(np.uint8)
    order = np.random.default_rng(0).permutation(len(images))

    def table(idx: np.ndarray) -> pa.Table:
        return with_metadata(pa.table({
            "id": [str(i) for i in idx], "image": [encode_png(images[i]) for i in idx],
            "label": pa.array(digits.target[idx], pa.int32()),
            "weight": pa.array(np.random.default_rng(1).uniform(0.2, 1, len(idx)), pa.float32()),
        }), classes=[str(c) for c in range(10)])

    return table(order[:1300]), table(order[1300:])


def main() -> None:
    train, test = _tables()
    rows = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        for weighting in ("sampler", "loss"):
            t0 = time.perf_counter()
            r = train_model(train, test, TrainParams(weighting=weighting), num_classes=10, seed=0)
            rows.append((f"train_model, {weighting}, {threads} thread(s)", time.perf_counter() - t0,
                         r.metrics["test_accuracy"]))
    torch.set_num_threads(1)
    from winnow.stages.train.models import SmallCNN

    model = SmallCNN(1, 10)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    t0 = time.perf_counter()
    ds = ManifestDataset(train)
    for x, y, w in DataLoader(ds, batch_size=128, sampler=weighted_sampler(ds.table)):
        opt.zero_grad()
        weighted_loss(model(x), y, w).backward()
        opt.step()
    rows.append(("README loop (DataLoader), 1 epoch, 1 thread", time.perf_counter() - t0, None))
    print("| run | seconds | test accuracy |\n| --- | ---: | ---: |")
    for name, sec, acc in rows:
        print(f"| {name} | {sec:.2f} | {'' if acc is None else f'{acc:.3f}'} |")


if __name__ == "__main__":
    main()
