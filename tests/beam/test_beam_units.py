"""The Beam executor's parts, each against the local code path, on small inputs (fast: the
in-process local runner)."""

from __future__ import annotations

import io
import json
import re
import tempfile
from pathlib import Path

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.util import assert_that, equal_to
from click.testing import CliRunner
from PIL import Image

from winnow.pipeline.beam.options import parse_beam_options, pipeline_options, winnow_options
from winnow.pipeline.cli import main
from winnow.stages.select.core import select
from winnow.stages.select.params import SelectParams

IN_PROCESS = ("direct_running_mode=in_memory", "direct_num_workers=1")


def test_options_default_to_offline_multiprocess_direct_runner():
    opts = parse_beam_options([])
    assert opts["runner"] == "winnow.pipeline.beam.local_runner.LocalRunner"
    assert opts["direct_running_mode"] == "multi_processing" and opts["direct_num_workers"] == "2"
    view = pipeline_options(["--direct-num-workers=3"]).get_all_options()
    assert view["direct_num_workers"] == 3 and view["direct_running_mode"] == "multi_processing"


def test_default_runner_never_tries_prism(tmp_path, monkeypatch):
    """Beam's DirectRunner first tries Prism (a binary download); the default must not."""
    from apache_beam.runners.portability import job_server

    started = []
    monkeypatch.setattr(job_server.SubprocessJobServer, "start", lambda self: started.append(self))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where Prism's beam-temp* would go
    with beam.Pipeline(options=pipeline_options(IN_PROCESS)) as p:
        out = p | beam.Create([1, 2, 3]) | beam.Map(lambda x: x * 2)
        assert_that(out, equal_to([2, 4, 6]))
    assert started == [] and list(tmp_path.iterdir()) == []
    assert parse_beam_options(["runner=DirectRunner"])["direct_num_workers"] == "2"  # kept for Beam's own


def test_options_for_another_runner_drop_the_direct_runner_defaults():
    opts = parse_beam_options(["runner=FlinkRunner", "flink_master=localhost:8081"])
    assert opts["runner"] == "FlinkRunner" and opts["flink_master"] == "localhost:8081"
    assert "direct_num_workers" not in opts and "direct_running_mode" not in opts


@pytest.mark.parametrize("bad", ["runner", "=x", ""])
def test_malformed_option_names_itself(bad: str):
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_beam_options([bad])


def test_model_copies_is_winnows_own_option():
    ours, rest = winnow_options(["model_copies=2", "runner=DirectRunner"])
    assert ours == {"model_copies": "2"} and rest == ("runner=DirectRunner",)
    assert "model_copies" not in pipeline_options(["model_copies=2"]).get_all_options(retain_unknown_options=True)
    with pytest.raises(ValueError, match="model_copies"):
        winnow_options(["model_copies=zero"])


def test_cli_offers_the_executor_on_the_data_parallel_stages_only():
    runner = CliRunner()
    for name in ("ingest", "embed", "select", "export"):
        out = runner.invoke(main, [name, "--help"]).output
        assert "--executor" in out and "--beam-option" in out
    for name in ("weight", "train", "report"):
        assert "--executor" not in runner.invoke(main, [name, "--help"]).output


def test_config_rejects_an_unknown_executor(tmp_path: Path):
    cfg = tmp_path / "p.toml"
    cfg.write_text(f'run_dir = "{tmp_path / "run"}"\nexecutor = "spark"\nstages = ["ingest"]\n')
    res = CliRunner().invoke(main, ["run", str(cfg), "-q"])
    assert res.exit_code == 1 and "executor" in res.output


def test_bad_beam_option_is_an_input_error(tmp_path: Path):
    res = CliRunner().invoke(main, ["ingest", "digits", "--run-dir", str(tmp_path), "--executor", "beam",
                                    "--beam-option", "no-equals-sign", "-q"])
    assert res.exit_code == 1 and "KEY=VALUE" in res.output


@pytest.mark.parametrize("method,budget", [("facility-location", 0.15), ("facility-location", 7.0), ("set-cover", 0.0)])
def test_select_on_beam_equals_the_core(method: str, budget: float, tmp_path: Path):
    from winnow.pipeline.beam.select import select_on_beam

    rng = np.random.default_rng(3)
    n = 240
    labels = rng.integers(0, 4, n)
    vectors = rng.normal(size=(n, 6)).astype(np.float32) + labels[:, None]
    eligible = rng.random(n) > 0.2
    vectors[~eligible & (rng.random(n) > 0.5)] = np.nan  # ineligible rows may hold anything
    labels[~eligible & (rng.random(n) > 0.5)] = -1
    params = SelectParams(method=method, budget=budget, k=5)
    local = select(vectors, labels, eligible, params, seed=11)
    beam = select_on_beam(vectors, labels, eligible, params, seed=11, device="cpu",
                          options=pipeline_options(IN_PROCESS), work=tmp_path)
    assert local.columns["selected"].sum() > 0
    for name in ("selected", "cluster_id", "rank"):
        np.testing.assert_array_equal(beam.columns[name], local.columns[name], err_msg=name)
    for name in ("coreset_weight", "gain"):
        np.testing.assert_allclose(beam.columns[name], local.columns[name], rtol=0, atol=1e-6, err_msg=name)
    assert beam.metrics["n_selected"] == local.metrics["n_selected"]
    assert beam.metrics["objective"] == pytest.approx(local.metrics["objective"], rel=1e-9)
    assert beam.metrics["per_class"].keys() == local.metrics["per_class"].keys()


def _png(value: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((8, 8), value, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def test_ingest_of_a_parquet_manifest_reads_and_decodes_on_the_workers(tmp_path: Path):
    from winnow.pipeline.beam.ingest import beam_validator
    from winnow.stages.ingest import IngestParams, ingest

    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "a.png").write_bytes(_png(9))
    images = [_png(i * 20) for i in range(12)] + [b"not an image", None, None]
    uris = [None] * 13 + ["imgs/a.png", "imgs/missing.png"]
    labels = [i % 3 for i in range(15)]
    table = pa.table({"id": pa.array(range(100, 115), pa.int64()), "image": pa.array(images, pa.binary()),
                      "uri": pa.array(uris, pa.string()), "label": pa.array(labels, pa.int32())})
    src = tmp_path / "m.parquet"
    pq.write_table(table, src)
    params = IngestParams(source=str(src), trusted_per_class=2)
    local = ingest(params, seed=5)
    beam = ingest(params, seed=5, validate=beam_validator(params, pipeline_options(IN_PROCESS), tmp_path))
    # PIL's message names the BytesIO object's address (see the report): compare without it.
    def _errors(t: pa.Table) -> list[str | None]:
        return [None if e is None else re.sub(r"0x[0-9a-f]+", "0x", e) for e in t["error"].to_pylist()]

    assert beam.manifest.drop_columns(["error"]).equals(local.manifest.drop_columns(["error"]))
    errors = _errors(beam.manifest)
    assert errors == _errors(local.manifest)
    assert errors[:12] == [None] * 12 and errors[13] is None
    assert "cannot decode" in errors[12] and "not found" in errors[14]


def test_config_executor_and_beam_options_reach_the_stage(tmp_path: Path):
    cfg = tmp_path / "p.toml"
    cfg.write_text(
        f'run_dir = "{tmp_path / "run"}"\nexecutor = "beam"\n'
        'beam_option = ["direct_running_mode=in_memory", "direct_num_workers=1"]\nstages = ["ingest"]\n'
        '[ingest]\nsource = "digits"\nmax_rows = 150\ntrusted_per_class = 2\n'
    )
    res = CliRunner().invoke(main, ["run", str(cfg), "-q"])
    assert res.exit_code == 0, res.output
    record = json.loads((tmp_path / "run" / "ingest" / "stage.json").read_text())
    assert record["executor"] == "beam" and record["metrics"]["rows"] == 150


def test_backbone_handler_matches_the_local_forward_pass_bitwise():
    import torch

    from winnow.models.registry import build_model
    from winnow.pipeline.beam.embed import BackboneHandler
    from winnow.stages.embed.backbone import Backbone
    from winnow.stages.embed.data import ImageTransform

    torch.manual_seed(0)
    net = build_model("small_cnn", 5, in_channels=1, input_size=8).eval()
    tf = ImageTransform(8, "L", (0.5,), (0.25,))
    nhwc = np.random.default_rng(0).integers(0, 256, (13, 8, 8, 1), dtype=np.uint8)
    local_batches = [np.arange(0, 8), np.arange(8, 13)]  # the local stage: batches of 8, then 5
    local = Backbone(net, tf, "small_cnn", torch.device("cpu"), False)
    expected = np.concatenate(
        [local.embed(torch.from_numpy(nhwc[b]).permute(0, 3, 1, 2)).numpy() for b in local_batches])
    handler = BackboneHandler(net, "", tf, "small_cnn", "cpu", False, 8)
    model = handler.load_model()
    order = np.random.default_rng(1).permutation(13)  # Beam batches rows as it likes
    sizes = np.where(np.arange(13) < 8, 8, 5)
    examples = [(nhwc[r].transpose(2, 0, 1), int(sizes[r])) for r in order]
    got = [r.inference for r in handler.run_inference(examples[:6], model)]
    got += [r.inference for r in handler.run_inference(examples[6:], model)]
    np.testing.assert_array_equal(np.stack(got), expected[order])


def test_ingest_on_the_workers_reads_a_hugging_face_image_struct(tmp_path: Path):
    from winnow.pipeline.beam.ingest import beam_validator
    from winnow.stages.ingest import IngestParams, ingest

    (tmp_path / "on_disk.png").write_bytes(_png(7))
    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    images = [{"bytes": _png(i * 20), "path": f"{i}.png"} for i in range(8)]
    images += [{"bytes": None, "path": "on_disk.png"}, {"bytes": None, "path": "gone.png"}]
    src = tmp_path / "hf.parquet"
    pq.write_table(pa.table({"id": [f"r{i}" for i in range(10)], "image": pa.array(images, image_type),
                             "label": [i % 2 for i in range(10)]}), src)
    params = IngestParams(source=str(src), trusted_per_class=1)
    local = ingest(params, seed=5)
    beam = ingest(params, seed=5, validate=beam_validator(params, pipeline_options(IN_PROCESS), tmp_path))
    assert beam.manifest.equals(local.manifest)
    errors = local.manifest["error"].to_pylist()
    assert errors[:9] == [None] * 9 and "not found" in errors[9]


def _pid_and(fn, item, **data):
    import os

    return os.getpid(), fn(item, **data)


def test_crossfit_heads_fitted_on_the_workers_equal_the_local_fit_bitwise(tmp_path: Path):
    import functools
    import os

    from winnow.pipeline.beam.workers import map_on_workers
    from winnow.stages.embed.crossfit import crossfit

    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 6)).astype(np.float32)
    y = (x[:, 0] + 0.5 * rng.normal(size=300) > 0).astype(np.int64) + (x[:, 1] > 1)
    fit = np.ones(300, bool)
    fit[:20] = False  # rows outside the folds: scored by the all-rows head
    # (the mlp head: its all-rows head gives every row's last-layer input, so all of it is compared)
    pids: list[int] = []

    def on_workers(fn, items, data):  # the default runner's worker processes; their pids recorded
        got = map_on_workers(functools.partial(_pid_and, fn), items, data, options=pipeline_options([]),
                             work=tmp_path)
        pids.extend(pid for pid, _ in got)
        return [result for _, result in got]

    local = crossfit(x, y, fit, np.ones(300, bool), 3, folds=3, kind="mlp", hidden=8, iters=20, seed=4)
    beam_ = crossfit(x, y, fit, np.ones(300, bool), 3, folds=3, kind="mlp", hidden=8, iters=20, seed=4,
                     map_heads=on_workers)
    assert len(pids) == 4 and os.getpid() not in pids, "every head was fitted in a worker process"
    assert not list(tmp_path.iterdir()), "the data files are removed once read"
    np.testing.assert_array_equal(beam_.logits, local.logits)
    np.testing.assert_array_equal(beam_.last_input, local.last_input)
    assert beam_.fold_accuracy == local.fold_accuracy


def test_a_shard_saved_on_a_worker_equals_the_local_shard_with_decode_errors():
    # _SaveShard gets a shard's rows in any order, some with a decode error instead of an
    # embedding; its state must be the local stage's finish_shard state for the same rows.
    import torch

    from winnow.pipeline.beam.embed import _SaveShard
    from winnow.stages.common.checkpoint import MemoryCheckpoints
    from winnow.stages.embed.core import ShardPlan, finish_shard

    plan = ShardPlan([(0, 4), (4, 8)], ["fp0", "fp1"], {}, [0, 1])
    emb = {4: np.array([1.0, 2.0], np.float32), 6: np.array([3.0, 4.0], np.float32)}
    items = [(7, None, "cannot decode"), (6, emb[6], None), (4, emb[4], None)]  # row 5: not usable
    store = MemoryCheckpoints()
    [(index, state)] = list(_SaveShard(plan, store).process((1, items)))
    local = finish_shard(plan, 1, [(torch.from_numpy(np.stack([emb[4], emb[6]])), torch.tensor([4, 6]), [None, None]),
                                   (torch.zeros(1, 2), torch.tensor([7]), ["cannot decode"])], None)
    assert index == 1 and state["fingerprint"] == "fp1" and state["errors"] == ["", "", "", "cannot decode"]
    torch.testing.assert_close(state["embedding"], local["embedding"], equal_nan=True, rtol=0, atol=0)
    assert torch.isnan(state["embedding"][[1, 3]]).all()
    assert store.states["shard-00001"]["errors"] == state["errors"]
    # A shard whose every row failed: no embedding width, NaN everywhere once gathered.
    [(_, only_errors)] = list(_SaveShard(plan, None).process((0, [(2, None, "bad")])))
    assert only_errors["embedding"].shape == (4, 0) and only_errors["errors"][2] == "bad"
    from winnow.stages.embed.core import gather_shards

    embedding, errors = gather_shards(plan.bounds, {0: only_errors, 1: state}, 8)
    assert embedding.shape == (8, 2) and np.isnan(embedding[:4]).all() and errors == {2: "bad", 7: "cannot decode"}
    np.testing.assert_array_equal(embedding[[4, 6]], np.stack([emb[4], emb[6]]))
