"""The stages as Python functions on a run directory: ``winnow.select("runs/d", budget=0.2)``.

Each function runs its stage exactly as ``winnow <stage>`` does (the same step, the same
runner: cache, atomic commit, ``stage.json``), with the stage's options as keyword-only
arguments. The functions are generated from the step table and the params dataclasses, so an
option is still declared once (in ``winnow/stages/<stage>/params.py``) and ``help(winnow.select)``
lists the same options, defaults and help text as ``winnow select --help``.

Every import from the rest of the pipeline is in the block below, so that a refactoring of the
CLI or the steps has one place to update here.
"""

from __future__ import annotations

import dataclasses
import inspect
import io
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from winnow.pipeline.beam import BEAM_STAGES
from winnow.pipeline.cli import InputError, execute, plan_from_config, run_plan
from winnow.pipeline.config import build_params, load_config
from winnow.pipeline.demo import DEMO_CONFIG, DEMO_DESCRIPTION, DEMO_RUN_DIR, demo_summary
from winnow.pipeline.rundir import RunDir
from winnow.pipeline.runner import StageOutcome
from winnow.pipeline.settings import FIELDS, RunSettings, env_default
from winnow.pipeline.steps import STEPS, Step
from winnow.stages.common.arrow import as_arrow_table

__all__ = ["StageRun", "demo", "embed", "evaluate", "export", "ingest", "report", "run", "select", "train", "weight"]

# The run-level options every stage function takes after its own (RunSettings' fields; the run
# directory is the first argument): name -> (default, type, help). An option read from an
# environment variable by the CLI (threads) defaults to None here: the variable, else its default.
RUN_OPTIONS: dict[str, tuple[Any, str, str]] = {
    f.name: (None, f"{f.type} | None",
             f"{f.metadata['help']} None = ${f.metadata['envvar']}, else {f.default!r} (as the CLI).")
    if f.metadata["envvar"] else (f.default, str(f.type), f.metadata["help"])
    for f in FIELDS.values() if f.name != "run_dir"
}
TABLE_ARGS = ("source", "trusted")  # ingest's arguments that may be a table instead of a path

EXAMPLES = {
    "ingest": 'winnow.ingest("runs/d", source="digits", inject_noise="uniform:0.4", trusted_per_class=10)',
    "embed": 'winnow.embed("runs/d")',
    "select": 'winnow.select("runs/d", method="facility-location", budget=0.1)',
    "weight": 'winnow.weight("runs/d", method="l2rw", rounds=2, epochs=5)',
    "export": 'winnow.export("runs/d", policy="weight").table("flags.parquet")',
    "train": 'winnow.train("runs/d").metrics["test_accuracy"]',
    "evaluate": 'winnow.evaluate("runs/d").metrics["flags"]["overall"]["f1"]',
    "report": 'winnow.report("runs/d").path("report.html")',
}


@dataclass(frozen=True, repr=False)
class StageRun:
    """What a stage function returns: where its results are, and what they say.

    Attributes
    ----------
    run_dir : the run directory.
    stage : the stage's name.
    cached : True when the stage was skipped because its cached result was up to date.
    metrics : the stage's metrics, as ``stage.json`` records them.
    outputs : the stage's files (name -> path), ``stage.json`` aside.
    seconds : how long it ran (0 when cached or skipped).
    skipped : why :func:`run` skipped the stage, else None.
    """

    run_dir: Path
    stage: str
    cached: bool
    metrics: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, Path] = field(default_factory=dict)
    seconds: float = 0.0
    skipped: str | None = None

    def path(self, name: str) -> Path:
        """The path of one of the stage's files (``flags.parquet``), which must exist."""
        if name not in self.outputs:
            raise KeyError(f"{self.stage} wrote no {name!r}; its files: {', '.join(self.outputs) or 'none'}")
        return self.outputs[name]

    def table(self, name: str | None = None) -> pa.Table:
        """One of the stage's Parquet files as a pyarrow table (default: its first)."""
        if name is None:
            parquet = [n for n in self.outputs if n.endswith(".parquet")]
            if not parquet:
                raise KeyError(f"{self.stage} wrote no Parquet file; its files: {', '.join(self.outputs) or 'none'}")
            name = parquet[0]
        return pq.read_table(self.path(name))

    def __repr__(self) -> str:
        state = f"skipped={self.skipped!r}" if self.skipped else ("cached" if self.cached else f"ran {self.seconds:.1f}s")
        shown = list(self.outputs)[:5]
        files = ", ".join(shown) + (f", ... {len(self.outputs) - 5} more" if len(self.outputs) > 5 else "")
        return (f"StageRun({self.stage!r}, {state}, run_dir={str(self.run_dir)!r}, outputs=[{files}], "
                f"metrics={len(self.metrics)} keys)")


def _stage_run(run: RunDir, outcome: StageOutcome) -> StageRun:
    names = [n for n in outcome.record.get("outputs", {}) if n != "stage.json"]
    return StageRun(run_dir=run.root, stage=outcome.stage, cached=outcome.cached, metrics=dict(outcome.metrics),
                    outputs={n: run.stage_dir(outcome.stage) / n for n in names}, seconds=outcome.seconds,
                    skipped=outcome.record.get("skipped"))


def _settings(values: dict[str, Any], *, where: str) -> RunSettings:
    """The run settings among keyword arguments, checked as a TOML config's are; an unset one
    (None) as the CLI leaves it: its environment variable, else its default."""
    given = dict(values)
    for name, f in FIELDS.items():
        if f.metadata["envvar"] and given.get(name) is None:
            given[name] = env_default(name)
    return RunSettings.from_values(given, where=where, toml=False)


def _execute(run: RunDir, step: Step, params: Any, settings: RunSettings) -> StageOutcome:
    """:func:`winnow.pipeline.cli.execute`, the CLI's own path; its errors as ValueError."""
    try:
        return execute(run, step, params, settings)
    except InputError as exc:
        raise ValueError(exc.message) from exc


def _arrow_input(value: Any, name: str) -> pa.Table:
    """An in-memory ``source``/``trusted`` table as Arrow; relative ``uri``s made absolute from the
    current folder (a table has no folder of its own for them to be relative to)."""
    table = as_arrow_table(value, name=name)
    if "uri" in table.column_names:
        uris = [u if u is None or os.path.isabs(u) else os.path.abspath(u) for u in table["uri"].cast(pa.string()).to_pylist()]
        table = table.set_column(table.column_names.index("uri"), "uri", pa.array(uris, pa.string()))
    return table


def _write_if_changed(table: pa.Table, path: Path) -> None:
    """Write ``table`` to ``path`` unless the file already holds these bytes: the cache fingerprints
    ingest's source by size and modification time, so an unchanged table keeps its cached manifest."""
    buf = io.BytesIO()
    pq.write_table(table, buf)
    data = buf.getvalue()
    if path.is_file() and path.read_bytes() == data:
        return
    path.parent.mkdir(exist_ok=True)
    tmp = path.with_suffix(".parquet.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _run_stage(name: str, run_dir: str | Path, options: dict[str, Any]) -> StageRun:
    step = STEPS[name]
    settings = _settings({k: options.pop(k) for k in _run_options(name) if k in options}, where=f"winnow.{name}")
    tables: dict[Path, pa.Table] = {}
    if name == "ingest":  # a table is stored under <run>/inputs/ and ingested from there
        for key in TABLE_ARGS:
            if key in options and not isinstance(options[key], str | os.PathLike):
                path = Path(run_dir) / "inputs" / f"{key}.parquet"
                tables[path] = _arrow_input(options[key], key)
                options[key] = str(path)
            elif key in options:
                options[key] = str(options[key])
        if tables and not options.get("data_root"):
            options["data_root"] = os.getcwd()  # where the tables' relative uris were made absolute from
    params = build_params(step.params_cls, options, where=f"winnow.{name}")  # before the run dir is made
    if name != "ingest" and not Path(run_dir).is_dir():  # as the CLI: a mistyped run_dir makes no folder
        raise ValueError(f"no run directory {run_dir}; run winnow.ingest({str(run_dir)!r}, ...) first "
                         "(or check the spelling of run_dir)")
    run = RunDir(run_dir)
    for path, table in tables.items():
        _write_if_changed(table, path)
    return _stage_run(run, _execute(run, step, params, settings))


def _run_options(stage: str) -> dict[str, tuple[Any, str, str]]:
    """The run-level options of ``stage``'s function: the executor's only on the Beam stages."""
    return {k: v for k, v in RUN_OPTIONS.items() if stage in BEAM_STAGES or not FIELDS[k].metadata["beam"]}


def _type_name(f: dataclasses.Field) -> str:
    return f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))


def _stage_function(name: str) -> Callable[..., StageRun]:
    """``winnow.<name>(run_dir, *, <the stage's options>, seed, device, threads, force[, executor,
    beam_options])``, with a real signature and a NumPy-style docstring made from the params
    dataclass."""
    step = STEPS[name]
    fields = dataclasses.fields(step.params_cls)
    extra = _run_options(name)

    def stage(run_dir: str | Path, /, **options: Any) -> StageRun:
        unknown = sorted(set(options) - {f.name for f in fields} - set(extra))
        if unknown:
            raise TypeError(f"winnow.{name}() got unknown option(s) {unknown}; see help(winnow.{name})")
        return _run_stage(name, run_dir, dict(options))

    params = [inspect.Parameter("run_dir", inspect.Parameter.POSITIONAL_ONLY, annotation="str | Path")]
    doc = [f"{step.summary}", "",
           f"``winnow {name}`` as a function: the same step, cache and artifacts under ``run_dir/{name}/``.", "",
           "Parameters", "----------", "run_dir : str or Path", "    The run directory (ingest creates it; the other stages need it to exist)."]
    for f in fields:
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        typ = _type_name(f)
        if name == "ingest" and f.name in TABLE_ARGS:
            typ = f"{typ} or table"
        params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=typ))
        choices = f.metadata.get("choices")
        doc += [f"{f.name} : {'{' + ', '.join(map(repr, choices)) + '}' if choices else typ}, default {default!r}",
                f"    {f.metadata.get('help', '')}"]
        if name == "ingest" and f.name in TABLE_ARGS:
            doc.append("    Also a pandas, polars or pyarrow table (stored under ``run_dir/inputs/``; relative "
                       "``uri`` values are read from the current folder, which is then the default data root).")
    for key, (default, typ, text) in extra.items():
        params.append(inspect.Parameter(key, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=typ))
        doc += [f"{key} : {typ}, default {default!r}", f"    {text}"]
    doc += ["", "Returns", "-------", "StageRun",
            "    The run directory, whether the result came from the cache, the metrics and the files.", "",
            "Raises", "------", "ValueError",
            "    Bad input or an option out of range (the message names it and what to do), or an upstream",
            "    stage that has not run.", "", "Examples", "--------", ">>> import winnow",
            f">>> {EXAMPLES[name]}  # doctest: +SKIP"]
    stage.__signature__ = inspect.Signature(params, return_annotation="StageRun")  # type: ignore[attr-defined]
    stage.__name__ = stage.__qualname__ = name
    stage.__doc__ = "\n".join(doc)
    return stage


ingest = _stage_function("ingest")
embed = _stage_function("embed")
select = _stage_function("select")
weight = _stage_function("weight")
export = _stage_function("export")
train = _stage_function("train")
evaluate = _stage_function("evaluate")
report = _stage_function("report")


def run(config: str | Path | Mapping[str, Any], *, run_dir: str | Path | None = None, force: bool = False,
        threads: int | None = None) -> list[StageRun]:
    """Run the stages of a pipeline config in order, as ``winnow run`` does.

    Parameters
    ----------
    config : str, Path or mapping
        A TOML file, or the same structure as a dict: top-level run keys (``run_dir``, ``seed``,
        ``device``, ``threads``, ``executor``, ``stages``, ...) and one table per stage.
    run_dir : str or Path, optional
        Overrides the config's ``run_dir``.
    force : bool
        Re-run every stage.
    threads : int, optional
        Overrides the config's ``threads``.

    Returns
    -------
    list of StageRun
        One per stage, in order; a stage the data cannot feed (``evaluate`` without a truth,
        ``train`` without images) has ``skipped`` set to the reason.

    Examples
    --------
    >>> runs = winnow.run("examples/pipeline.toml", run_dir="runs/p")  # doctest: +SKIP
    """
    cfg = dict(config) if isinstance(config, Mapping) else load_config(Path(config))
    plan = plan_from_config(cfg)
    settings = RunSettings.from_values(cfg)
    if threads is not None:  # (None: the config's threads, not $WINNOW_THREADS)
        settings = dataclasses.replace(settings, threads=_settings({"threads": threads}, where="winnow.run").threads)
    settings = dataclasses.replace(settings, force=force or settings.force)
    rd = RunDir(run_dir or settings.run_dir)
    try:
        outcomes = run_plan(rd, plan, settings, quiet=True)
    except InputError as exc:
        raise ValueError(exc.message) from exc
    return [_stage_run(rd, o) for o in outcomes]


def demo(run_dir: str | Path = DEMO_RUN_DIR, **settings: Any) -> dict[str, Any]:
    """Every stage on scikit-learn's {demo}, as ``winnow demo`` runs it (the same
    outputs, byte for byte), with the run-level options of a stage function (no executor).

    Returns
    -------
    dict
        ``run_dir``, the flags' ``precision``/``recall``/``f1``/``auroc`` against the truth, the
        ``downstream`` test accuracies, the paths of the ``manifests`` and the ``report``.

    Examples
    --------
    >>> winnow.demo("runs/demo", threads=1)["flags"]["f1"]  # doctest: +SKIP
    """
    unknown = sorted(set(settings) - set(_run_options("demo")))
    if unknown:
        raise TypeError(f"winnow.demo() got unknown option(s) {unknown}; see help(winnow.demo)")
    checked = _settings(settings, where="winnow.demo")
    rd = RunDir(run_dir)
    plan = [(STEPS[name], build_params(STEPS[name].params_cls, values, where=f"demo [{name}]"))
            for name, values in DEMO_CONFIG.items()]
    try:
        run_plan(rd, plan, checked, quiet=True)
    except InputError as exc:
        raise ValueError(exc.message) from exc
    return demo_summary(rd)


demo.__doc__ = (demo.__doc__ or "").format(demo=DEMO_DESCRIPTION)
demo.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
    [inspect.Parameter("run_dir", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=DEMO_RUN_DIR, annotation="str | Path")]
    + [inspect.Parameter(k, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=typ)
       for k, (default, typ, _) in _run_options("demo").items()], return_annotation="dict[str, Any]")
