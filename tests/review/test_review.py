"""review: the decision log (append-only, replayed with undo), the order, applying decisions, and
the terminal session driven by scripted keys, including a kill -9 between decisions."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from tests.conftest import write_digits_features
from winnow.pipeline.cli import main
from winnow.pipeline.review import review_cmd
from winnow.stages.common import schema
from winnow.stages.review import (
    CorrectionsError,
    Decision,
    append_decision,
    apply_decisions,
    expected_gain,
    in_force,
    read_corrections,
    review_order,
    seen_ids,
)
from winnow.stages.review.corrections import write_csv

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _log(tmp_path: Path, entries: list[tuple]) -> Path:
    folder = tmp_path / "review" / "corrections.parquet"
    for k, (rid, action, label, reviewer) in enumerate(entries):
        append_decision(folder, Decision(rid, action, label, reviewer, T0 + timedelta(seconds=k)))
    return folder


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    """Digits as features (40% uniform noise, 10 trusted per class): ingest, embed, export."""
    root = tmp_path_factory.mktemp("review")
    truth = write_digits_features(root / "feats.parquet")
    run = root / "run"
    for args in (["ingest", str(root / "feats.parquet"), "--features", "embedding"],
                 ["embed", "--model", "features", "--folds", "3", "--threads", "1"],
                 ["export", "--threads", "1"]):
        res = CliRunner().invoke(main, [*args, "--run-dir", str(run), "-q"])
        assert res.exit_code == 0, res.output
    (root / "truth.npy").write_bytes(truth.astype(np.int64).tobytes())
    return run


def _fresh(exported: Path, tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(exported, run)
    return run


def test_log_round_trip_and_replay(tmp_path: Path):
    folder = _log(tmp_path, [("a", "accept", 1, "ann"), ("b", "skip", None, "ann"), ("c", "drop", None, "bob"),
                             ("b", "undo", None, "ann"), ("d", "relabel", 2, "ann"), ("a", "keep", 0, "bob")])
    log = read_corrections(folder)
    assert log.num_rows == 6 and log.schema.equals(pq.read_table(folder).schema, check_metadata=False)
    assert log["action"].to_pylist() == ["accept", "skip", "drop", "undo", "relabel", "keep"]
    force = in_force(log)
    assert {k: (v.action, v.label) for k, v in force.items()} == {"a": ("keep", 0), "c": ("drop", None),
                                                                   "d": ("relabel", 2)}
    assert seen_ids(log) == {"a", "c", "d"}, "ann's undo took back her skip of b, not bob's drop"
    write_csv(log, tmp_path / "c.csv")
    back = read_corrections(tmp_path / "c.csv")
    assert back.equals(log), "CSV <-> Parquet round trip"
    pq.write_table(log, tmp_path / "c.parquet")
    assert read_corrections(tmp_path / "c.parquet").equals(log)


@pytest.mark.parametrize(("csv", "message"), [
    ("id,action,label\nx,accept,\n", r"row 0: action 'accept' for id 'x' needs a label"),
    ("id,action,label\nx,keep,1\ny,drop,3\n", r"row 1: action 'drop' for id 'y' takes no label"),
    ("id,action,label\nx,fix,1\n", r"row 0: action 'fix' for id 'x' is not one of accept"),
    ("id,label\nx,1\n", r"no column\(s\) \['action'\]"),
    ("id,action,label\nx,relabel,cat\n", r"labels are class indices"),
])
def test_bad_corrections_files_name_the_row(tmp_path: Path, csv: str, message: str):
    (tmp_path / "c.csv").write_text(csv)
    with pytest.raises(CorrectionsError, match=message):
        read_corrections(tmp_path / "c.csv")


def test_apply_relabels_drops_and_moves_to_trusted(exported: Path):
    manifest = pq.read_table(exported / "ingest" / schema.MANIFEST)
    ids = manifest["id"].to_pylist()
    train = [i for i, s in enumerate(manifest["split"].to_pylist()) if s == "train"]
    a, b, c, d = (ids[i] for i in train[:4])
    decisions = {a: Decision(a, "relabel", 3), b: Decision(b, "drop", reviewer="ann"), c: Decision(c, "keep", 0),
                 d: Decision(d, "accept", 5)}
    out = apply_decisions(manifest, decisions, as_trusted=True)
    m = out.manifest
    assert m.num_rows == manifest.num_rows, "nothing is deleted"
    row = {rid: i for i, rid in enumerate(ids)}
    assert m["label"][row[a]].as_py() == 3 and m["label_name"][row[a]].as_py() == "3"
    assert m["error"][row[b]].as_py() == "dropped in review by ann" and m["split"][row[b]].as_py() == "train"
    assert [m["split"][row[k]].as_py() for k in (a, c, d)] == ["trusted"] * 3
    assert m["review_action"].to_pylist().count(None) == m.num_rows - 4
    assert out.counts == {"relabel": 1, "drop": 1, "keep": 1, "accept": 1} and out.to_trusted == 3
    untouched = [i for i in range(m.num_rows) if ids[i] not in decisions]
    for col in ("label", "split", "error", "id", "true_label"):
        assert m[col].take(untouched).equals(manifest[col].take(untouched)), col
    with pytest.raises(CorrectionsError, match=r"1 id\(s\) not in the manifest, e.g. \['nope'\]"):
        apply_decisions(manifest, {"nope": Decision("nope", "keep", 1)})
    with pytest.raises(CorrectionsError, match=r"id '.*': label 12 is not a class index of this run \(0..9\)"):
        apply_decisions(manifest, {a: Decision(a, "relabel", 12)})


def test_gain_order_known_answer():
    t = pa.table({"id": list("abcde"), "label": [0, 0, 1, 1, 2], "split": ["train"] * 4 + ["trusted"],
                  "error": pa.nulls(5, pa.string()),
                  "noise_score": [0.6, 0.9, 0.7, 0.2, None], "noise_flag": [True, True, True, False, False],
                  "suggested_label": [1, 0, 0, 1, 2], "suggested_confidence": [0.8, 0.95, 0.3, 0.9, 0.9]})
    # a: suggestion differs, P(wrong) >= 0.8; b: agrees with conf 0.95, so P(wrong) = 0.05 exactly
    np.testing.assert_allclose(expected_gain(t)[:4], [0.8, 0.05, 0.7, 0.1])
    assert review_order(t).tolist() == [0, 2, 1]
    assert review_order(t, order="score").tolist() == [1, 2, 0]
    assert review_order(t, flagged_only=False).tolist() == [0, 2, 3, 1]
    assert review_order(t, exclude={"a"}).tolist() == [2, 1]
    assert review_order(t, order="class").tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match="--order 'best'"):
        review_order(t, order="best")


def test_gain_order_corrects_more_than_random(exported: Path):
    curated = pq.read_table(exported / "export" / schema.CURATED)
    truth = np.frombuffer((exported.parent / "truth.npy").read_bytes(), dtype=np.int64)
    wrong = curated["label"].to_numpy() != truth
    order = review_order(curated, flagged_only=False)
    budget = len(order) // 10
    rng = np.random.default_rng(0)
    random = rng.permutation(order)[:budget]
    assert wrong[order[:budget]].mean() > 0.95 and wrong[order[:budget]].sum() >= 2 * wrong[random].sum()


def test_scripted_session_records_each_key_and_resumes(exported: Path, tmp_path: Path):
    run = _fresh(exported, tmp_path)
    res = CliRunner().invoke(review_cmd, ["--run-dir", str(run), "--reviewer", "ann"], input="aksl3\nd")
    assert res.exit_code == 0, res.output
    log = read_corrections(run / "review" / "corrections.parquet")
    assert log["action"].to_pylist() == ["accept", "keep", "skip", "relabel", "drop"]
    assert log["reviewer"].to_pylist() == ["ann"] * 5 and log["label"][3].as_py() == 3
    curated = pq.read_table(run / "export" / schema.CURATED)
    first = review_order(curated)
    assert log["id"].to_pylist() == [curated["id"][i].as_py() for i in first[:5]]
    assert log["label"][0].as_py() == curated["suggested_label"][int(first[0])].as_py()
    # A second session starts after them; u takes back the last (the drop) and shows that row again.
    res = CliRunner().invoke(review_cmd, ["--run-dir", str(run), "--reviewer", "ann"], input="uk")
    assert f"id {curated['id'][int(first[5])].as_py()}" in res.output.split("row ")[1]
    log = read_corrections(run / "review" / "corrections.parquet")
    assert log["action"].to_pylist()[-2:] == ["undo", "keep"] and log["id"][6].as_py() == log["id"][4].as_py()
    assert in_force(log)[log["id"][4].as_py()].action == "keep"


def test_kill9_between_and_during_decisions_loses_nothing(exported: Path, tmp_path: Path):
    run = _fresh(exported, tmp_path)
    folder = run / "review" / "corrections.parquet"
    code = ("import sys; from winnow.pipeline.review import review_cmd; "
            "review_cmd(['--run-dir', sys.argv[1], '--reviewer', 'kim'])")
    proc = subprocess.Popen([sys.executable, "-c", code, str(run)], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert proc.stdin is not None
    for k, key in enumerate("akd"):
        proc.stdin.write(key.encode())
        proc.stdin.flush()
        deadline = time.time() + 60
        while len(list(folder.glob("part-*.parquet"))) < k + 1:
            assert time.time() < deadline and proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    log = read_corrections(folder)
    assert log["action"].to_pylist() == ["accept", "keep", "drop"], "every decision taken is on disk"
    res = CliRunner().invoke(review_cmd, ["--run-dir", str(run), "--reviewer", "kim"], input="q")
    curated = pq.read_table(run / "export" / schema.CURATED)
    assert f"id {curated['id'][int(review_order(curated)[3])].as_py()}" in res.output, "resumes at the 4th row"


def test_review_without_export_says_what_to_run(tmp_path: Path):
    (tmp_path / "run").mkdir()
    res = CliRunner().invoke(review_cmd, ["--run-dir", str(tmp_path / "run")])
    assert res.exit_code == 1 and "run `winnow export --run-dir" in res.output
    res = CliRunner().invoke(review_cmd, ["--run-dir", str(tmp_path / "missing")])
    assert res.exit_code == 1 and "no run directory" in res.output and not (tmp_path / "missing").exists()


def _stage(args: list[str]) -> dict:
    res = CliRunner().invoke(main, [*args, "--json", "-q"])
    assert res.exit_code == 0, res.output
    import json

    return json.loads(res.stdout)


def test_apply_through_ingest_and_the_cache_reruns_only_what_the_decisions_change(exported: Path, tmp_path: Path):
    run = _fresh(exported, tmp_path)
    feats = str(exported.parent / "feats.parquet")
    log = run / "review" / "corrections.parquet"
    res = CliRunner().invoke(review_cmd, ["--run-dir", str(run), "--reviewer", "ann"], input="aadq")
    assert res.exit_code == 0, res.output
    ingest = ["ingest", feats, "--features", "embedding", "--run-dir", str(run), "--corrections", str(log)]
    first = _stage(ingest + ["--as-trusted"])
    assert not first["cached"] and first["metrics"]["review"]["decisions"] == {"accept": 2, "drop": 1}
    assert first["metrics"]["review"]["moved_to_trusted"] == 2
    decided = read_corrections(log)["id"].to_pylist()
    m = pq.read_table(run / "ingest" / schema.MANIFEST)
    row = {rid: i for i, rid in enumerate(m["id"].to_pylist())}
    curated = pq.read_table(exported / "export" / schema.CURATED)
    for rid in decided[:2]:
        assert m["label"][row[rid]].as_py() == curated["suggested_label"][row[rid]].as_py()
        assert m["split"][row[rid]].as_py() == "trusted" and m["review_action"][row[rid]].as_py() == "accept"
    assert m["error"][row[decided[2]]].as_py() == "dropped in review by ann"
    assert m.num_rows == curated.num_rows, "nothing is deleted"
    embed = ["embed", "--model", "features", "--folds", "3", "--threads", "1", "--run-dir", str(run)]
    assert not _stage(embed)["cached"], "the labels changed: embed's probs are recomputed"
    assert _stage(ingest + ["--as-trusted"])["cached"], "the same decisions: ingest is a cache hit"
    assert _stage(embed)["cached"], "and so is embed"
    CliRunner().invoke(review_cmd, ["--run-dir", str(run), "--reviewer", "ann"], input="kq")
    assert not _stage(ingest + ["--as-trusted"])["cached"], "a new decision re-runs ingest"


def test_apply_refuses_decisions_of_another_run_naming_them(exported: Path, tmp_path: Path):
    run = _fresh(exported, tmp_path)
    (tmp_path / "c.csv").write_text("id,action,label\nnot-a-row,keep,1\n")
    res = CliRunner().invoke(main, ["ingest", str(exported.parent / "feats.parquet"), "--features", "embedding",
                                    "--run-dir", str(run), "--corrections", str(tmp_path / "c.csv")])
    assert res.exit_code == 1 and "1 id(s) not in the manifest, e.g. ['not-a-row']" in res.output
    assert pq.read_table(run / "ingest" / schema.MANIFEST).equals(pq.read_table(exported / "ingest" / schema.MANIFEST))
    res = CliRunner().invoke(main, ["ingest", "digits", "--run-dir", str(run), "--as-trusted"])
    assert res.exit_code == 2 and "--as-trusted needs --corrections" in res.output
