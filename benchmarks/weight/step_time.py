"""Per-step time of each weighting method / one plain SGD step, same model, same batch.

Batch: 100 noisy training examples + 100 trusted examples. Models: a small CNN with BatchNorm on
3x32x32 inputs (16-32-64 channels, max-pool after every block), winnow's own ``small_cnn`` backbone
(``winnow.models.small.SmallCNN``: 32-64-128 channels, one max-pool; what ``--trainable full`` trains) and
an MLP (64 -> 256 -> 10). Also times the reference implementations (double
backward through a look-ahead copy of the model, as the L2RW and Meta-Weight-Net code does).

    .venv/bin/python -m benchmarks.weight.step_time [--reps 30] [--threads 1]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from winnow.models.meta_weight_net import MetaWeightNet
from winnow.models.small import SmallCNN as WinnowSmallCNN
from winnow.stages.weight.bilevel import bilevel_step
from winnow.stages.weight.l2rw import l2rw_step
from winnow.stages.weight.mwn import mwn_step
from winnow.stages.weight.soseleto import soseleto_step


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        return self.fc(self.features(x).flatten(1))


def mlp():
    return nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 10))


def sgd(model):
    return torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)


# -- references: the papers' code pattern (look-ahead copy + double backward) ------------------
def reference_l2rw(model, opt, x, y, tx, ty, lr=0.1):
    meta = copy.deepcopy(model)
    params = dict(meta.named_parameters())
    eps = torch.zeros(len(y), requires_grad=True)
    losses = F.cross_entropy(meta(x), y, reduction="none")
    grads = torch.autograd.grad((eps * losses).sum(), list(params.values()), create_graph=True)
    look = {k: p - lr * g for (k, p), g in zip(params.items(), grads)}
    val = F.cross_entropy(functional_call(meta, look, (tx,)), ty)
    grad_eps = torch.autograd.grad(val, eps)[0]
    w = torch.clamp(-grad_eps, min=0)
    w = w / w.sum() if w.sum() > 0 else w
    losses = F.cross_entropy(model(x), y, reduction="none")
    opt.zero_grad()
    (w * losses).sum().backward()
    opt.step()


def reference_mwn(model, opt, vnet, vopt, x, y, tx, ty, lr=0.1):
    meta = copy.deepcopy(model)
    params = dict(meta.named_parameters())
    losses = F.cross_entropy(meta(x), y, reduction="none")
    v = vnet(losses.detach())
    w = v / v.sum()
    grads = torch.autograd.grad((w * losses).sum(), list(params.values()), create_graph=True)
    look = {k: p - lr * g for (k, p), g in zip(params.items(), grads)}
    val = F.cross_entropy(functional_call(meta, look, (tx,)), ty)
    vopt.zero_grad()
    val.backward()
    vopt.step()
    losses = F.cross_entropy(model(x), y, reduction="none")
    with torch.no_grad():
        v = vnet(losses.detach())
        w = v / v.sum()
    opt.zero_grad()
    (w * losses).sum().backward()
    opt.step()


def plain(model, opt, x, y):
    opt.zero_grad()
    F.cross_entropy(model(x), y).backward()
    opt.step()


MODELS = (("small CNN (BN, 3x32x32)", SmallCNN, (3, 32, 32)),
          ("winnow small_cnn (BN, 3x32x32)", lambda: WinnowSmallCNN(10, in_channels=3), (3, 32, 32)),
          ("MLP 64-256-10", mlp, (64,)))


def setup(build, shape):
    """Seeded batch (100 noisy x, y + 100 trusted tx, ty), a fresh model in train mode, its SGD."""
    torch.manual_seed(0)
    x, tx = torch.randn(100, *shape), torch.randn(100, *shape)
    y, ty = torch.randint(0, 10, (100,)), torch.randint(0, 10, (100,))
    model = build()
    model.train()
    return x, y, tx, ty, model, sgd(model)


def bench(name, build, shape, reps):
    x, y, tx, ty, model, opt = setup(build, shape)
    vnet = MetaWeightNet()
    vopt = torch.optim.Adam(vnet.parameters(), lr=1e-3, weight_decay=1e-4)
    alpha = torch.full((100,), 0.5)
    vx, vy = tx[:13], ty[:13]  # bilevel: one validation mini-batch (batch / k)
    steps = {
        "sgd": lambda: plain(model, opt, x, y),
        "l2rw": lambda: l2rw_step(model, opt, x, y, tx, ty, lr=0.1),
        "mwn": lambda: mwn_step(model, opt, vnet, vopt, x, y, tx, ty, lr=0.1),
        "soseleto": lambda: soseleto_step(model, opt, x, y, tx, ty, alpha, lr=0.1, lr_alpha=10.0),
        "bilevel": lambda: bilevel_step(model, opt, x, y, vx, vy, k=8, mu=0.01),
        "l2rw (reference)": lambda: reference_l2rw(model, opt, x, y, tx, ty),
        "mwn (reference)": lambda: reference_mwn(model, opt, vnet, vopt, x, y, tx, ty),
    }
    times = {k: [] for k in steps}
    for _ in range(3):  # warm-up
        for f in steps.values():
            f()
    for _ in range(reps):  # interleaved, so load changes hit every method alike
        for k, f in steps.items():
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {k: (med[k] * 1e3, med[k] / med["sgd"]) for k in steps}


GOALS = {"l2rw": 2.3, "mwn": 2.8, "soseleto": 2.3, "bilevel": 1.2}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1: on a shared 2-core CPU, 2 OpenMP threads spin against other work)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, median of {args.reps} interleaved steps\n")
    print("| model | method | ms / step | x SGD step | goal |")
    print("| --- | --- | ---: | ---: | ---: |")
    for name, build, shape in MODELS:
        res = bench(name, build, shape, args.reps)
        for k, (ms, ratio) in res.items():
            goal = GOALS.get(k)
            mark = "" if goal is None else (f"<= {goal}" + (" ok" if ratio <= goal else " MISSED"))
            print(f"| {name} | {k} | {ms:.2f} | {ratio:.2f} | {mark} |")


if __name__ == "__main__":
    main()
