"""top_flagged: filters, ordering, class names."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from tests.report.report_data import EVIL_CLASS
from winnow.stages.report import top_flagged


def test_sorted_by_descending_score_and_only_flagged_usable_rows(curated):
    rows = top_flagged(curated, top=1000)
    scores = [r["noise_score"] for r in rows]
    assert scores == sorted(scores, reverse=True)
    flag = np.array(curated.column("noise_flag").to_pylist())
    usable = np.array([e is None for e in curated.column("error").to_pylist()])
    assert len(rows) == int((flag & usable).sum())
    assert set(rows[0]) >= {"id", "label_name", "suggested_label_name", "noise_score",
                            "suggested_confidence", "weight", "uri"}
    assert top_flagged(curated, top=3) == rows[:3]


def test_min_score_and_class_filter(curated):
    rows = top_flagged(curated, top=1000, min_score=0.8)
    assert rows and all(r["noise_score"] >= 0.8 for r in rows)
    assert len(rows) < len(top_flagged(curated, top=1000))
    evil = top_flagged(curated, class_name=EVIL_CLASS, top=1000)
    assert evil and all(r["label_name"] == EVIL_CLASS and r["label"] == 2 for r in evil)
    names = ["zero", "one", EVIL_CLASS, "three"]
    for r in top_flagged(curated, top=1000):
        assert r["suggested_label_name"] == names[r["suggested_label"]]


def test_unknown_class_lists_known_ones_and_bad_options(curated):
    with pytest.raises(ValueError, match=r"unknown class 'four'.*'zero', 'one'"):
        top_flagged(curated, class_name="four")
    with pytest.raises(ValueError, match="--top"):
        top_flagged(curated, top=0)
    with pytest.raises(ValueError, match="--min-score"):
        top_flagged(curated, min_score=1.5)
    with pytest.raises(ValueError, match="noise_score"):
        top_flagged(curated.drop_columns(["noise_score"]))


def test_ties_keep_manifest_order_and_names_without_metadata():
    table = pa.table({"id": ["a", "b", "c", "d"], "label": pa.array([0, 1, 1, 0], pa.int32()),
                      "label_name": ["cat", "dog", "dog", "cat"], "noise_score": [0.5, 0.9, 0.5, 0.7],
                      "noise_flag": [True, True, True, None], "suggested_label": pa.array([1, 0, 0, 1], pa.int32())})
    rows = top_flagged(table)
    assert [r["id"] for r in rows] == ["b", "a", "c"]
    assert rows[0]["suggested_label_name"] == "cat" and rows[0]["weight"] is None
    assert [r["id"] for r in top_flagged(table, class_name="cat")] == ["a"]


def test_cli_prints_user_strings_literally_and_json_without_nan(tmp_path, monkeypatch):
    """Class names and ids that look like Rich markup are shown as they are (a closing tag used to
    crash the table); a NaN weight (a row outside the coreset) is JSON null, not NaN."""
    import json

    import pyarrow.compute as pc
    from click.testing import CliRunner

    import winnow.pipeline.steps as steps
    from tests.report.report_data import make_curated
    from winnow.pipeline.cli import main

    table = make_curated(classes=["[/x]", "[b]2[/]", "two", "3"])
    weight = table.column("weight").to_numpy().copy()
    weight[::2] = np.nan
    table = table.set_column(table.schema.get_field_index("weight"), "weight", pa.array(weight, pa.float32()))
    first = int(np.flatnonzero(pc.and_(table["noise_flag"], pc.is_null(table["error"])).to_numpy(zero_copy_only=False))[0])
    ids = table.column("id").to_pylist()
    ids[first] = "id[/]1"
    table = table.set_column(0, "id", pa.array(ids))
    monkeypatch.setattr(steps, "load_curated", lambda run: table)
    res = CliRunner().invoke(main, ["inspect", "--run-dir", str(tmp_path), "--top", "200"])
    assert res.exit_code == 0, res.output
    assert "[/x]" in res.output and "[b]2[/]" in res.output and "id[/]1" in res.output
    res = CliRunner().invoke(main, ["inspect", "--run-dir", str(tmp_path), "--top", "200", "--json"])
    rows = json.loads(res.stdout, parse_constant=lambda c: pytest.fail(f"invalid JSON constant {c}"))["rows"]
    assert any(r["weight"] is None for r in rows) and any(r["weight"] is not None for r in rows)
