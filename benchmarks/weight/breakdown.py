"""Where a weighting step's time goes, and the floor that the forward-mode scheme sets.

Times each piece of an L2RW step (the same pieces make up SOSELETO's; Meta-Weight-Net adds a
look-ahead backward and a second trusted pass) on the step_time models, 100 noisy + 100 trusted:

* F, B: forward (with graph) and backward of a plain SGD step; S: optimizer step + zero_grad;
* trusted: v = grad L_trusted (a forward and backward of the trusted batch);
* kernel: the dual pass (primal forward + tangent), so the tangent costs T = kernel - F;
* weighted B: the real backward through the kernel's primal graph.

L2RW = trusted + kernel + weighted B + S, so its ratio to SGD is at least (trusted + F + weighted B
+ S) / (F + B + S) even with a free tangent. The table gives the tangent budget a goal leaves,
T_goal = goal * SGD - (trusted + F + weighted B + S), next to the measured T and to the part of T
that is convolutions alone (profiled: self time of forward convolution ops in the dual pass minus
that in a primal forward), which no exact tangent rule can avoid: every convolution with an input tangent
needs conv(dx, w) + conv(x, dw).

Meta-Weight-Net's exact one-step look-ahead needs, besides L2RW's pieces, the real forward and the
look-ahead backward before its (detached) kernel pass: at least (2F + B + trusted + weighted B + S)
/ SGD even with a free tangent (column "MWN with T = 0"; B stands in for the look-ahead backward).

    .venv/bin/python -m benchmarks.weight.breakdown [--reps 20] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

from benchmarks.weight.step_time import MODELS, setup
from winnow.stages.weight.alignment import (
    commit_buffers,
    mean_loss_gradient,
    per_example_alignment,
    scratch_buffers,
)
from winnow.stages.weight.l2rw import l2rw_weights


def conv_ms(fn: Callable[[], object], reps: int = 5) -> float:
    """Mean ms per call spent in forward convolution ops (self time: no nested double counting)."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(reps):
            fn()
    total = sum(e.self_cpu_time_total for e in prof.key_averages() if "conv" in e.key and "backward" not in e.key)
    return total / reps / 1e3


def breakdown(build: Callable[[], torch.nn.Module], shape: tuple[int, ...], reps: int) -> dict[str, float]:
    x, y, tx, ty, model, opt = setup(build, shape)
    times: dict[str, list[float]] = {}

    def timed(name: str, fn: Callable[[], object]) -> object:
        t0 = time.perf_counter()
        out = fn()
        times.setdefault(name, []).append(time.perf_counter() - t0)
        return out

    def kernel() -> tuple[torch.Tensor, torch.Tensor, dict]:
        buffers = scratch_buffers(model)
        losses, d = per_example_alignment(model, x, y, v, params=dict(model.named_parameters()), buffers=buffers)
        return losses, d, buffers

    for rep in range(reps + 3):  # the first 3 are warm-up
        loss = timed("F", lambda: F.cross_entropy(model(x), y))
        timed("B", loss.backward)
        timed("S", lambda: (opt.step(), opt.zero_grad(set_to_none=True)))
        v, _ = timed("trusted", lambda: mean_loss_gradient(model, dict(model.named_parameters()), tx, ty))
        losses, d, buffers = timed("kernel", kernel)
        w = l2rw_weights(d, lr=0.1)
        timed("weighted B", (w * losses).sum().backward)
        timed("S", lambda: (opt.step(), opt.zero_grad(set_to_none=True)))
        commit_buffers(model, buffers)
        if rep < 3:
            for k in times:
                times[k].clear()
    ms = {k: statistics.median(t) * 1e3 for k, t in times.items()}
    with torch.no_grad():
        primal_conv = conv_ms(lambda: model(x))
    ms["tangent convolutions"] = conv_ms(kernel) - primal_conv
    return ms


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--goal", type=float, default=2.3, help="L2RW / SOSELETO goal, x SGD step")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, median of {args.reps} steps, ms\n")
    print("| model | F | B | S | SGD step | trusted | kernel | T = kernel - F | weighted B "
          "| L2RW parts / SGD | with T = 0 | T allowed by goal | tangent convolutions | MWN with T = 0 |")
    print("| --- |" + " ---: |" * 14)
    for name, build, shape in MODELS:
        m = breakdown(build, shape, args.reps)
        sgd_ms = m["F"] + m["B"] + m["S"]
        fixed = m["trusted"] + m["F"] + m["weighted B"] + m["S"]
        tangent = m["kernel"] - m["F"]
        cells = [m["F"], m["B"], m["S"], sgd_ms, m["trusted"], m["kernel"], tangent, m["weighted B"]]
        print(f"| {name} | " + " | ".join(f"{c:.2f}" for c in cells)
              + f" | {(fixed + tangent) / sgd_ms:.2f} | {fixed / sgd_ms:.2f}"
              + f" | {args.goal * sgd_ms - fixed:.2f} | {m['tangent convolutions']:.2f}"
              + f" | {(fixed + m['F'] + m['B']) / sgd_ms:.2f} |")


if __name__ == "__main__":
    main()
