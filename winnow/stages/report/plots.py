"""Matplotlib figures for the report, returned as ``data:image/png;base64,...`` URIs.

Figures are built with ``matplotlib.figure.Figure`` directly (Agg canvas, no pyplot), so
rendering never touches a GUI backend or pyplot's global state.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

FLAGGED, UNFLAGGED, NOISY, CLEAN = "#d1495b", "#00798c", "#edae49", "#30638e"


def figure_to_data_uri(fig: Figure) -> str:
    """PNG bytes of ``fig`` as a data URI (no Software metadata, so output is reproducible)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _hist(ax: object, groups: Sequence[tuple[str, np.ndarray, str]], bins: np.ndarray, xlabel: str) -> None:
    for name, values, color in groups:
        values = values[np.isfinite(values)]
        if len(values):
            ax.hist(values, bins=bins, alpha=0.6, color=color, label=f"{name} (n={len(values)})",
                    density=True)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("density")
    ax.legend(frameon=False, fontsize=8)
    ax.spines[["top", "right"]].set_visible(False)


def _bins(*arrays: np.ndarray) -> np.ndarray:
    values = np.concatenate([a[np.isfinite(a)] for a in arrays]) if arrays else np.zeros(0)
    lo, hi = (float(values.min()), float(values.max())) if len(values) else (0.0, 1.0)
    if hi <= lo:
        hi = lo + 1.0
    return np.linspace(lo, hi, 31)


def weight_histograms(weights: np.ndarray, flagged: np.ndarray, *, noisy: np.ndarray | None = None,
                      scores: np.ndarray | None = None) -> str:
    """Histograms of ``(n,)`` weights for flagged vs unflagged rows; with ``noisy`` (truth) also
    weights and noise scores for noisy vs clean rows. Returns a PNG data URI."""
    panels = 1 if noisy is None else (3 if scores is not None else 2)
    fig = Figure(figsize=(4.2 * panels, 3.0))
    axes = fig.subplots(1, panels, squeeze=False)[0]
    bins = _bins(weights)
    _hist(axes[0], [("unflagged", weights[~flagged], UNFLAGGED), ("flagged", weights[flagged], FLAGGED)],
          bins, "weight")
    axes[0].set_title("weight: flagged vs unflagged", fontsize=10)
    if noisy is not None:
        _hist(axes[1], [("clean", weights[~noisy], CLEAN), ("noisy (truth)", weights[noisy], NOISY)],
              bins, "weight")
        axes[1].set_title("weight: clean vs noisy (truth)", fontsize=10)
        if scores is not None:
            _hist(axes[2], [("clean", scores[~noisy], CLEAN), ("noisy (truth)", scores[noisy], NOISY)],
                  np.linspace(0, 1, 31), "noise score")
            axes[2].set_title("noise score: clean vs noisy (truth)", fontsize=10)
    return figure_to_data_uri(fig)


def curve_plot(curves: Mapping[str, Sequence[float]], *, x: Sequence[float] | None = None,
               xlabel: str = "round", ylabel: str = "mean weight") -> str:
    """Line plot of named series (e.g. mean weight per round for clean and noisy rows)."""
    fig = Figure(figsize=(6.0, 3.0))
    ax = fig.subplots()
    for name, values in curves.items():
        values = np.asarray(values, dtype=np.float64)
        xs = np.arange(len(values)) if x is None else np.asarray(x, dtype=np.float64)[: len(values)]
        ax.plot(xs, values, marker="o", markersize=3, label=str(name))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(frameon=False, fontsize=8)
    ax.spines[["top", "right"]].set_visible(False)
    return figure_to_data_uri(fig)


def matrix_plot(matrix: np.ndarray, *, xlabel: str, ylabel: str) -> str:
    """Heat map of a ``(k, k)`` count matrix (for many classes, where an HTML table is unreadable)."""
    fig = Figure(figsize=(6.0, 5.0))
    ax = fig.subplots()
    rows = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    im = ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    fig.colorbar(im, ax=ax, label="fraction of row")
    return figure_to_data_uri(fig)
