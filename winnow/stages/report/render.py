"""One self-contained HTML page that shows what export found: pure core of ``winnow report``.

No network, no external CSS, JS or fonts: plots are matplotlib PNGs and thumbnails PNGs, both
embedded as base64 data URIs. The page's one script is the package's constant ``review.js`` (review
buttons that build a corrections CSV), allowed by its hash in the page's Content-Security-Policy;
no value of the data is ever written into it. The page is the jinja2 template
``templates/report.html.j2`` (package data) rendered with autoescape on, so every string that
comes from the data or the user (class names, ids, uris, errors, summary keys, the title) is
escaped by the template engine rather than by hand; this module only computes what the page
shows, as plain data. Sections render from whatever columns the table has, so a partial run
still gets a report, with a note where a section has nothing to show.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import math
from collections.abc import Mapping, Sequence
from importlib.resources import files
from typing import Any

import jinja2
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from markupsafe import Markup
from PIL import Image
from sklearn.metrics import confusion_matrix

from winnow.stages.common.images import ImageError, encode_png, image_to_array, open_image
from winnow.stages.common.rows import usable_mask
from winnow.stages.common.schema import TRAIN
from winnow.stages.report import plots
from winnow.stages.report.inspect import flagged_indices, known_class_names

MAX_TABLE_CLASSES = 30  # beyond this, the confusion matrix is drawn as an image
THUMB_MIN, THUMB_MAX = 64, 128  # thumbnail side in px: tiny images are enlarged, big ones shrunk
MAX_RECORDS, MAX_ITEMS = 200, 50  # rows of a list of dicts, items of a list, shown in the summary tables

CSS = """
body{font:14px/1.45 -apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;color:#222;
background:#f6f7f9;margin:0}
main{max-width:1120px;margin:0 auto;padding:16px 24px 48px}
h1{font-size:24px;margin:12px 0 4px}h2{font-size:18px;margin:0 0 10px;border-bottom:1px solid #e3e5e8;
padding-bottom:6px}
section{background:#fff;border:1px solid #e3e5e8;border-radius:8px;padding:16px 20px;margin:16px 0}
nav a{margin-right:14px;color:#30638e;text-decoration:none}
.cards{display:flex;flex-wrap:wrap;gap:12px;margin:8px 0 12px}
.card{background:#f0f4f8;border-radius:6px;padding:8px 14px;min-width:110px}
.card b{display:block;font-size:20px}.card span{color:#555;font-size:12px}
table{border-collapse:collapse;font-size:13px;margin:6px 0}
th,td{border:1px solid #e3e5e8;padding:3px 8px;text-align:right;vertical-align:top}
th{background:#f0f4f8}td.l,th.l{text-align:left}
table.confusion td{min-width:28px;text-align:center}
.note{color:#666;font-style:italic}
.grid{display:flex;flex-wrap:wrap;gap:12px}
figure{margin:0;width:150px;background:#fafbfc;border:1px solid #e3e5e8;border-radius:6px;padding:6px;
font-size:12px;overflow-wrap:anywhere}
figure img{display:block;margin:0 auto 4px;image-rendering:pixelated;max-width:128px}
.given{color:#d1495b}.sugg{color:#2a7d2e}.muted{color:#777}
img.plot{max-width:100%;height:auto}
.noimg{height:64px;display:flex;align-items:center;justify-content:center;color:#999;background:#eee}
.review{margin:8px 0 12px}.actions{margin-top:4px;display:flex;flex-wrap:wrap;gap:2px}
.actions button,.actions select{font-size:11px;padding:1px 4px}
figure[data-decision]{border-color:#2a7d2e;background:#eef7ee}figure[data-decision=drop]{border-color:#d1495b;background:#fbeeee}
"""


def fmt(value: Any) -> str:
    """A scalar for display: floats to 4 significant digits, None as an em dash. Not escaped:
    the template escapes what it returns (the em dash is the page's own markup)."""
    if value is None:
        return Markup("&mdash;")
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return "NaN" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def _record_keys(records: Sequence[Mapping[str, Any]]) -> list[Any]:
    """The keys of a list of dicts, in first-seen order: one table column per key."""
    return list(dict.fromkeys(k for r in records for k in r))


@functools.cache
def _template() -> jinja2.Template:
    """The page template (package data), with autoescape on for every value it renders."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("winnow.stages.report", "templates"),
        autoescape=True, trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined,
    )
    env.filters.update(fmt=fmt, record_keys=_record_keys)
    env.tests.update(
        mapping_value=lambda v: isinstance(v, Mapping),
        list_value=lambda v: isinstance(v, (list, tuple)),
        record_list=lambda v: all(isinstance(x, Mapping) for x in v),
    )
    env.globals.update(max_records=MAX_RECORDS, max_items=MAX_ITEMS)
    return env.get_template("report.html.j2")


# A section is {"id", "title", "parts"}; a part is a dict whose "kind" the template's part() macro
# renders: note, h3, img, table, value (any JSON-like value), cards, confusion, figures.
Part = dict[str, Any]


def _section(sid: str, title: str, *parts: Part) -> dict[str, Any]:
    return {"id": sid, "title": title, "parts": list(parts)}


def _note(text: str) -> Part:
    return {"kind": "note", "text": text}


def _h3(text: str) -> Part:
    return {"kind": "h3", "text": text}


def _img(uri: str, alt: str) -> Part:
    return {"kind": "img", "uri": uri, "alt": alt}


def _value(value: Any) -> Part:
    return {"kind": "value", "value": value}


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]], *, left: int = 1) -> Part:
    """A table whose first ``left`` columns are left-aligned text; every cell goes through fmt."""
    return {"kind": "table", "header": list(header), "rows": [list(r) for r in rows], "left": left}


class _View:
    """Numpy views of the curated table's columns, computed once (nulls filled, rows usable)."""

    def __init__(self, curated: pa.Table) -> None:
        self.table = curated
        self.n = len(curated)
        cols = curated.column_names
        self.names = known_class_names(curated)
        self.k = len(self.names)
        self.usable = usable_mask(curated, need_label=False)  # no error; a row without a label still shows
        split = curated.column("split").to_numpy(zero_copy_only=False) if "split" in cols else None
        self.split = split
        # The rows that export scores: usable training rows.
        self.train = self.usable & (split == TRAIN if split is not None else True)
        self.label = self._ints("label")
        self.suggested = self._ints("suggested_label")
        self.true_label = self._ints("true_label") if "true_label" in cols else None
        self.flag = (
            pc.fill_null(curated.column("noise_flag"), False).to_numpy(zero_copy_only=False).astype(bool)
            if "noise_flag" in cols else None
        )
        self.score = self._floats("noise_score")
        self.weight = self._floats("weight")
        # Truth is known for a row when its true_label is set.
        self.known = self.true_label >= 0 if self.true_label is not None else np.zeros(self.n, dtype=bool)
        self.noisy = (
            (self.true_label != self.label) & (self.true_label >= 0) if self.true_label is not None else None
        )

    def _ints(self, name: str) -> np.ndarray | None:
        if name not in self.table.column_names:
            return None
        return pc.fill_null(self.table.column(name), -1).to_numpy().astype(np.int64)

    def _floats(self, name: str) -> np.ndarray | None:
        if name not in self.table.column_names:
            return None
        return pc.fill_null(pc.cast(self.table.column(name), pa.float64()), math.nan).to_numpy()

    def per_class(self, mask: np.ndarray, values: np.ndarray | None = None) -> np.ndarray:
        """``(k,)`` count of rows in ``mask`` per given label, or the sum of ``values`` over them."""
        sel = mask & (self.label >= 0) & (self.label < self.k)
        w = None if values is None else np.nan_to_num(values[sel])
        return np.bincount(self.label[sel], weights=w, minlength=self.k)[: self.k]


TRUSTED_VOTE_NAMES = {"knn": "nearest trusted rows", "linear": "linear model of the trusted rows"}


def _summary_section(v: _View, summary: Mapping[str, Any]) -> dict[str, Any]:
    cards = [("rows", v.n), ("training rows", int(v.train.sum())), ("rows with errors", int((~v.usable).sum()))]
    if v.flag is not None:
        flagged = int((v.flag & v.train).sum())
        pct = 100.0 * flagged / max(int(v.train.sum()), 1)
        cards.append(("flagged", f"{flagged} ({pct:.1f}%)"))
    if v.noisy is not None and (v.known & v.train).any():
        rate = float(v.noisy[v.train & v.known].mean())
        cards.append(("true noise rate", f"{100 * rate:.1f}%"))
        if v.flag is not None:
            tp = int((v.flag & v.noisy & v.train).sum())
            cards.append(("flag precision", f"{tp / max(int((v.flag & v.train).sum()), 1):.3f}"))
            cards.append(("flag recall", f"{tp / max(int((v.noisy & v.train).sum()), 1):.3f}"))
    fdr = summary.get("fdr")
    if isinstance(fdr, Mapping) and "q" in fdr:
        warn = " (trusted rows may not be exchangeable)" if (fdr.get("exchangeability") or {}).get("warn") else ""
        cards.append((f"flagged at false-discovery rate {fdr['q']:g}",
                      f"{fdr.get('flagged')} of {fdr.get('tested_rows')} ({fdr.get('trusted_rows')} trusted){warn}"))
    vote = summary.get("knn_weight")
    if isinstance(vote, Mapping) and vote.get("vote") in TRUSTED_VOTE_NAMES:
        share = vote.get("value")
        cards.append(("trusted rows' vote", TRUSTED_VOTE_NAMES[vote["vote"]]
                      + (f", share {share:.1f} beside the probs" if isinstance(share, (int, float)) else "")))
    check = summary.get("meta_signal_check")
    if isinstance(check, Mapping) and check.get("agreement_auroc") is not None:
        verdict = "used" if check.get("used") else "left out"
        cards.append(("meta weights in noise_score", f"{verdict} (agreement {check['agreement_auroc']:.2f})"))
    if "selected" in v.table.column_names:
        cards.append(("coreset size", int(pc.sum(pc.fill_null(v.table.column("selected"), False)).as_py() or 0)))
    return _section("summary", "Summary", {"kind": "cards", "cards": cards}, _h3("summary.json"),
                    _value(dict(summary)) if summary else _note("empty summary"))


def _classes_section(v: _View) -> dict[str, Any]:
    if v.label is None or v.k == 0:
        return _section("classes", "Per-class noise", _note("the table has no labels"))
    total = v.per_class(v.train)
    # (header, per-class values, shown as integer counts?)
    columns: list[tuple[str, np.ndarray, bool]] = [("training rows", total, True)]
    if v.flag is not None:
        flagged = v.per_class(v.train & v.flag)
        columns += [("flagged", flagged, True), ("flagged %", 100 * flagged / np.maximum(total, 1), False)]
    if v.score is not None:
        columns.append(("mean noise score", v.per_class(v.train, v.score) / np.maximum(total, 1), False))
    if v.weight is not None:
        columns.append(("mean weight", v.per_class(v.train, v.weight) / np.maximum(total, 1), False))
    if v.noisy is not None:
        noisy = v.per_class(v.train & v.noisy)
        columns += [("noisy (truth)", noisy, True), ("true noise %", 100 * noisy / np.maximum(total, 1), False)]
        if v.flag is not None:
            tp = v.per_class(v.train & v.noisy & v.flag)
            columns += [("flag precision", tp / np.maximum(v.per_class(v.train & v.flag), 1), False),
                        ("flag recall", tp / np.maximum(noisy, 1), False)]
    header = ["class"] + [h for h, _, _ in columns]
    rows = [[v.names[c]] + [int(a[c]) if is_int else float(a[c]) for _, a, is_int in columns] for c in range(v.k)]
    return _section("classes", "Per-class noise", _table(header, rows))


def _confusion_section(v: _View) -> dict[str, Any]:
    title = "Given vs suggested labels"
    if v.suggested is None or v.label is None or v.k == 0:
        return _section("confusion", title, _note("no suggested labels in this table"))
    sel = v.train & (v.label >= 0) & (v.label < v.k) & (v.suggested >= 0) & (v.suggested < v.k)
    matrix = confusion_matrix(v.label[sel], v.suggested[sel], labels=np.arange(v.k))
    intro = _note("rows: given label; columns: suggested label; off-diagonal cells are proposed relabels")
    if v.k > MAX_TABLE_CLASSES:
        return _section("confusion", title, intro, _img(
            plots.matrix_plot(matrix, xlabel="suggested label", ylabel="given label"), "confusion matrix"))
    frac = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    # Diagonal cells in blue, relabel proposals in red; opacity follows the row fraction.
    rows = [{"name": v.names[r], "cells": [
        {"count": int(matrix[r, c]), "rgb": "48,99,142" if r == c else "209,73,91",
         "alpha": f"{0.08 + 0.7 * frac[r, c]:.3f}"} for c in range(v.k)]} for r in range(v.k)]
    return _section("confusion", title, intro, {"kind": "confusion", "names": v.names, "rows": rows})


def _round_curves(v: _View) -> dict[str, list[float]]:
    rounds = sorted(
        (c for c in v.table.column_names if c.startswith("round_") and c[6:].isdigit()), key=lambda c: int(c[6:])
    )
    if not rounds:
        return {}
    values = np.stack([v._floats(c) for c in rounds], axis=1)  # (n, rounds)
    groups = {}
    if v.flag is not None:
        groups.update(flagged=v.train & v.flag, unflagged=v.train & ~v.flag)
    if v.noisy is not None:
        groups.update({"noisy (truth)": v.train & v.noisy, "clean (truth)": v.train & v.known & ~v.noisy})
    if not groups:
        groups = {"all": v.train}
    return {
        name: np.nanmean(values[mask], axis=0).tolist()
        for name, mask in groups.items() if mask.any() and np.isfinite(values[mask]).any()
    }


def _weights_section(v: _View, weight_curve: Mapping[str, Any] | None) -> dict[str, Any]:
    parts = []
    if v.weight is not None and v.flag is not None and v.train.any():
        sel = v.train
        noisy = v.noisy[sel] if v.noisy is not None and v.known[sel].all() else None
        parts.append(_img(plots.weight_histograms(
            v.weight[sel], v.flag[sel], noisy=noisy, scores=None if v.score is None else v.score[sel]),
            "weight histograms"))
    else:
        parts.append(_note("no weight or noise_flag column: nothing to plot"))
    if weight_curve:
        curve = dict(weight_curve)
        x = curve.pop("x", None)
        series = {k: s for k, s in curve.items() if isinstance(s, (list, tuple, np.ndarray))}
        if series:  # Meta-Weight-Net's learnt loss -> weight function
            parts += [_h3("Weight curve"), _img(plots.curve_plot(
                series, x=x, xlabel="per-example loss", ylabel="weight (Meta-Weight-Net)"), "weight curve")]
    curves = _round_curves(v)
    if curves:
        parts += [_h3("Mean weight per round"), _img(plots.curve_plot(curves), "mean weight per round")]
    return _section("weights", "Weights", *parts)


def _thumbnail(image: bytes | None, uri: str | None) -> dict[str, str]:
    """The example as base64 PNG (``data``), or why it cannot be shown (``error``)."""
    try:
        img = open_image(image, uri)
        img = img.convert("L" if img.mode in ("1", "L", "I", "I;16", "F") else "RGB")
    except ImageError as exc:
        return {"data": "", "error": str(exc)}
    side = max(img.size)
    if side < THUMB_MIN:  # enlarge tiny images (8x8 digits) with crisp pixels
        f = math.ceil(THUMB_MIN / side)
        img = img.resize((img.width * f, img.height * f), Image.Resampling.NEAREST)
    elif side > THUMB_MAX:
        img.thumbnail((THUMB_MAX, THUMB_MAX))
    return {"data": base64.b64encode(encode_png(image_to_array(img))).decode("ascii"), "error": ""}


def _flagged_section(v: _View, top: int) -> dict[str, Any]:
    title = f"Top {top} flagged examples"
    if v.flag is None or v.score is None:
        return _section("flagged", title, _note("no noise_flag/noise_score columns in this table"))
    rows = flagged_indices(v.table, top=top)
    if len(rows) == 0:
        return _section("flagged", title, _note("no example is flagged"))
    t = v.table.take(pa.array(rows, type=pa.int64()))

    def col(name: str) -> list[Any]:
        return t.column(name).to_pylist() if name in t.column_names else [None] * len(t)

    def name(label: int, unknown: str | None = None) -> str:
        return v.names[label] if 0 <= label < v.k else (str(label) if unknown is None else unknown)

    conf, uris = col("suggested_confidence"), col("uri")
    figures = []
    for i, (rid, image) in enumerate(zip(col("id"), col("image"))):
        r = int(rows[i])
        known = v.true_label is not None and v.true_label[r] >= 0
        figures.append({
            "thumbnail": _thumbnail(image, uris[i]), "id": rid, "given": name(v.label[r]),
            "suggested": name(v.suggested[r], "?") if v.suggested is not None else "?",
            "confidence": conf[i], "score": float(v.score[r]),
            "has_weight": v.weight is not None, "weight": float(v.weight[r]) if v.weight is not None else None,
            "truth": name(v.true_label[r]) if known else None, "uri": uris[i],
            "given_index": int(v.label[r]),
            "suggested_index": int(v.suggested[r]) if v.suggested is not None and 0 <= v.suggested[r] < v.k else None,
        })
    return _section("flagged", title, {"kind": "figures", "figures": figures, "names": v.names})


def _coreset_section(v: _View, coreset_metrics: Mapping[str, Any] | None) -> dict[str, Any]:
    parts = []
    if "selected" in v.table.column_names and v.k:
        selected = pc.fill_null(v.table.column("selected"), False).to_numpy(zero_copy_only=False).astype(bool)
        total = v.per_class(v.train)
        chosen = v.per_class(v.train & selected)
        header, columns = ["class", "training rows", "selected", "selected %"], [total, chosen, 100 * chosen / np.maximum(total, 1)]
        if "cluster_id" in v.table.column_names:
            covered = v.per_class(v.train & pc.is_valid(v.table.column("cluster_id")).to_numpy(zero_copy_only=False))
            header.append("covered % (assigned to a medoid)")
            columns.append(100 * covered / np.maximum(total, 1))
        if "coreset_weight" in v.table.column_names:
            header.append("sum of coreset weights")
            columns.append(v.per_class(v.train & selected, v._floats("coreset_weight")))
        rows = [[v.names[c]] + [float(col[c]) if i in (2, 3) else int(round(col[c])) for i, col in enumerate(columns)]
                for c in range(v.k)]
        parts.append(_table(header, rows))
    else:
        parts.append(_note("no coreset selection in this run"))
    if coreset_metrics:
        parts += [_h3("Selection metrics"), _value(dict(coreset_metrics))]
    return _section("coreset", "Coreset coverage", *parts)


def _issues_section(summary: Mapping[str, Any]) -> dict[str, Any]:
    """export's audit of the kNN graph: leakage first, then duplicates, outliers, overlap, balance."""
    title = "Data issues"
    audit = summary.get("audit")
    if not isinstance(audit, Mapping):
        return _section("issues", title, _note("no audit in this run (export --no-audit, or an older export)"))
    parts: list[Part] = []
    dups, outliers = audit.get("duplicates"), audit.get("outliers")
    if isinstance(dups, Mapping):
        leak = dups.get("leakage") or {}
        cards = [("exact duplicates", dups.get("exact")), ("near duplicates", dups.get("near")),
                 ("test rows leaked from train", leak.get("rows")),
                 ("duplicates with different labels", (dups.get("different_labels") or {}).get("rows"))]
        if isinstance(outliers, Mapping):
            cards.append(("outliers", outliers.get("flagged")))
        parts.append({"kind": "cards", "cards": cards})
        if leak.get("rows"):
            parts += [_h3("Leakage: test rows with a twin in train or trusted"),
                      _note("their test accuracy measures memory, not generalisation; drop them from the test split"),
                      _table(["row", "duplicate of"], leak.get("examples", []), left=2)]
        different = (dups.get("different_labels") or {}).get("examples") or []
        if different:
            parts += [_h3("Duplicates with different labels (one of each pair is likely wrong)"),
                      _table(["row", "duplicate of"], different, left=2)]
    else:
        parts.append(_note("no embeddings: duplicates and outliers were not checked"))
    if isinstance(outliers, Mapping) and outliers.get("top"):
        parts += [_h3(f"Outliers (score above {outliers.get('threshold', 0):.3f}: {outliers.get('calibrated_on')})"),
                  _table(["id", "outlier score"], [[o["id"], o["score"]] for o in outliers["top"]])]
    overlap = audit.get("class_overlap")
    if isinstance(overlap, Mapping) and overlap.get("pairs"):
        parts += [_h3("Most confusable class pairs (mean posterior mass across the pair)"),
                  _table(["classes", "overlap"], [[" / ".join(map(str, q["classes"])), q["overlap"]]
                                                   for q in overlap["pairs"]])]
        matrix = np.asarray(overlap.get("matrix") or [], dtype=float)
        if matrix.ndim == 2 and matrix.size:
            parts.append(_img(plots.matrix_plot(matrix, xlabel="class", ylabel="given label"), "class overlap"))
    balance = audit.get("class_balance")
    if isinstance(balance, Mapping):
        empty = balance.get("near_empty_classes") or []
        parts.append(_note(f"train rows per class: max/min ratio {balance.get('max_min_ratio')}"
                           + (f"; near-empty classes: {', '.join(map(str, empty))}" if empty else "")))
    return _section("issues", title, *parts)


def _errors_section(v: _View) -> dict[str, Any]:
    if "error" not in v.table.column_names or v.usable.all():
        return _section("errors", "Rows with errors", _note("no row has an error"))
    counts = pc.value_counts(v.table.column("error").filter(pc.is_valid(v.table.column("error")))).to_pylist()
    counts.sort(key=lambda d: -d["counts"])
    rows = [[d["values"], d["counts"]] for d in counts[:50]]
    more = [_note(f"{len(counts) - 50} more distinct errors not shown")] if len(counts) > 50 else []
    return _section("errors", "Rows with errors", _table(["error", "rows"], rows), *more)


def render_report(
    curated: pa.Table,
    summary: dict,
    *,
    evaluation: dict | None = None,
    coreset_metrics: dict | None = None,
    weight_curve: dict | None = None,
    title: str = "winnow report",
    top: int = 24,
) -> str:
    """Render the curation results as ONE self-contained HTML page.

    Parameters
    ----------
    curated : pa.Table
        Export's ``curated.parquet`` (every manifest row; class names in schema metadata). Missing
        columns shrink the page rather than fail it.
    summary : dict
        Export's ``summary.json``, shown as a nested table.
    evaluation : dict, optional
        ``winnow evaluate`` metrics (precision, recall, F1, AUROC, accuracies), shown as tables.
    coreset_metrics : dict, optional
        Selection metrics (objective, coverage) from select's ``stage.json``.
    weight_curve : dict, optional
        Series name -> values per round/epoch (optional key ``x`` for the abscissa); default: mean
        of the ``round_*`` columns for flagged/unflagged (and noisy/clean when the truth is known).
    title : str
        Page title.
    top : int
        Number of flagged examples shown with thumbnails (>= 1).

    Returns
    -------
    str
        The HTML document: no external resource, one constant script (review buttons); plots and
        thumbnails are data URIs.
    """
    if top < 1:
        raise ValueError(f"--top must be >= 1, got {top}")
    if not isinstance(curated, pa.Table):
        raise TypeError(f"curated must be a pyarrow Table, got {type(curated).__name__}")
    v = _View(curated)
    sections = [
        _summary_section(v, summary or {}),
        _classes_section(v),
        _confusion_section(v),
        _weights_section(v, weight_curve),
        _flagged_section(v, top),
        _coreset_section(v, coreset_metrics),
    ]
    if evaluation:
        sections.append(_section("evaluation", "Evaluation against the truth", _value(dict(evaluation))))
    sections.append(_issues_section(summary or {}))
    sections.append(_errors_section(v))
    nav = ([("summary", "Summary"), ("classes", "Classes"), ("confusion", "Relabels"), ("weights", "Weights"),
            ("flagged", "Flagged"), ("coreset", "Coreset")]
           + ([("evaluation", "Evaluation")] if evaluation else []) + [("issues", "Data issues"), ("errors", "Errors")])
    script = review_script()
    return _template().render(title=title, css=Markup(CSS), nav=nav, sections=sections, script=Markup(script),
                              script_hash=csp_hash(script))


def review_script() -> str:
    """The page's one script (package data): review buttons that build a corrections CSV."""
    return (files("winnow.stages.report") / "templates" / "review.js").read_text(encoding="utf-8")


def csp_hash(script: str) -> str:
    """The Content-Security-Policy source that allows exactly this inline script."""
    return "sha256-" + base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode("ascii")
