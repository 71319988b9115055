"""The ``winnow`` command line: one command per stage, plus ``run`` (a TOML config) and ``demo``.

Exit codes: 0 success, 1 bad input (the message says what and how to fix it), 2 bad usage.
Human-readable output goes to stderr; ``--json`` prints a machine-readable summary on stdout.
"""

from __future__ import annotations

import inspect
import json
import logging
import math
import numbers
import shutil
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
import pyarrow as pa
from rich.console import Console
from rich.markup import escape
from rich.text import Text

from winnow.pipeline import demo as demo_mod
from winnow.pipeline import steps as steps_mod
from winnow.pipeline import terminal
from winnow.pipeline.beam import BEAM_STAGES, beam_adapter
from winnow.pipeline.config import build_params, click_options, load_config
from winnow.pipeline.contract import OptionsChanged
from winnow.pipeline.review import review_cmd
from winnow.pipeline.rundir import RunDir, StageMissing
from winnow.pipeline.runner import StageOutcome, input_digests, run_stage
from winnow.pipeline.settings import RUN_KEYS, RunSettings, override
from winnow.pipeline.settings import click_options as settings_options
from winnow.stages.common import progress
from winnow.stages.common.params import to_dict

console = Console(stderr=True)
log = logging.getLogger("winnow")

EXAMPLES = {
    "ingest": "winnow ingest digits --run-dir runs/d --inject-noise uniform:0.4 --trusted-per-class 10",
    "embed": "winnow embed --run-dir runs/d --model resnet18 --weights resnet18.pt",
    "select": "winnow select --run-dir runs/d --method facility-location --budget 0.1",
    "weight": "winnow weight --run-dir runs/d --method l2rw --rounds 2 --epochs 5",
    "export": "winnow export --run-dir runs/d --policy weight",
    "train": "winnow train --run-dir runs/d",
    "evaluate": "winnow evaluate --run-dir runs/d --json",
    "report": "winnow report --run-dir runs/d",
}


class InputError(click.ClickException):
    """Bad input: exit code 1 and a message naming the problem."""

    exit_code = 1


def _output_options(quiet_help: str = "Only errors; no progress bars.") -> list[click.Option]:
    """How much a command prints (not a run setting: it changes no result)."""
    return [
        click.Option(["--json", "json_out"], is_flag=True, help="Print a machine-readable summary on stdout."),
        click.Option(["-v", "--verbose"], count=True, help="More log output (-vv for debug)."),
        click.Option(["-q", "--quiet"], is_flag=True, help=quiet_help),
    ]


def _setup_output(verbose: int, quiet: bool, json_out: bool) -> None:
    # PyTorch's own forward-AD decompositions (torch._decomp) call the deprecated torch.jit.script
    # on first use; the warning is about torch internals, not about anything a user can change.
    warnings.filterwarnings("ignore", message="`torch.jit.script` is deprecated", category=FutureWarning)
    level = logging.ERROR if quiet else (logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr, force=True)
    bars = not quiet and not json_out and sys.stderr.isatty()  # (rich draws on stdout: never with --json)
    progress.set_enabled(bars, plain_lines=not quiet and not bars)


def execute(run: RunDir, step: steps_mod.Step, params: Any, settings: RunSettings) -> StageOutcome:
    """Run one step with the stage cache, translating known failures into :class:`InputError`
    (``settings.run_dir`` aside: ``run`` is the run directory)."""
    from winnow.stages.common.threads import cpu_threads

    executor = settings.executor
    try:
        inputs = input_digests(run, step.name, params)
        adapter = beam_adapter(step.name) if executor == "beam" else None
        if adapter is None:  # stages without a Beam version run (and are recorded) as local
            adapter, executor = step.adapter, "local"
        with cpu_threads(settings.threads, uses_torch=step.name in steps_mod.TORCH_STAGES) as used:
            return run_stage(
                run, step.name, params=to_dict(params), inputs=inputs,
                adapter=lambda ctx: adapter(ctx, params), seed=settings.seed, device=settings.device,
                force=settings.force, executor=executor, beam_options=settings.beam_options,
                threads=used if step.name in steps_mod.THREAD_DEPENDENCE else None,
                thread_dependence=steps_mod.THREAD_DEPENDENCE.get(step.name, ""),
            )
    except (StageMissing, OptionsChanged) as exc:
        raise InputError(str(exc)) from exc
    except (ValueError, FileNotFoundError, pa.ArrowException) as exc:  # (Arrow: a file we cannot read)
        raise InputError(f"{step.name}: {exc}") from exc


def _report_outcome(outcome: StageOutcome, run: RunDir, quiet: bool) -> None:
    if quiet:
        return
    state = "cached" if outcome.cached else f"done in {outcome.seconds:.1f}s"
    console.print(f"[bold]{outcome.stage}[/bold] {state} -> {escape(str(run.stage_dir(outcome.stage)))}")


def _print_notes(run: RunDir, step: steps_mod.Step, params: Any, quiet: bool) -> None:
    """What the user may not have meant (:data:`terminal.NOTES`), on stderr, also with --json; not with -q."""
    if quiet or step.name not in terminal.NOTES:
        return
    for line in terminal.NOTES[step.name](run, params):
        console.print(Text(line, style="yellow"), soft_wrap=True)


def _json_safe(value: Any) -> Any:
    """NaN and infinities (a weight outside the coreset, an undefined metric) as null: strict
    JSON, which parsers such as JavaScript's ``JSON.parse`` accept."""
    if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def _emit_json(payload: dict[str, Any]) -> None:
    click.echo(json.dumps(_json_safe(payload), indent=2, sort_keys=True, default=str, allow_nan=False))


def _stage_command(step: steps_mod.Step) -> click.Command:
    def callback(json_out: bool, verbose: int, quiet: bool, **values: Any) -> None:
        _setup_output(verbose, quiet, json_out)
        settings = RunSettings.pop_from(values)
        try:
            params = build_params(step.params_cls, values, where=f"winnow {step.name}")
        except ValueError as exc:
            raise click.UsageError(str(exc)) from exc
        with _opened_run(settings.run_dir, create=not step.required) as run:
            outcome = execute(run, step, params, settings)
        _report_outcome(outcome, run, quiet or json_out)
        _print_notes(run, step, params, quiet)
        if step.name in terminal.PRINTERS and not (quiet or json_out):
            terminal.PRINTERS[step.name](run, console)
        if json_out:
            _emit_json({"stage": step.name, "cached": outcome.cached, "run_dir": str(run.root),
                        "metrics": outcome.metrics, "outputs": outcome.record.get("outputs", {})})

    command = click.Command(
        step.name, callback=callback,
        params=settings_options(beam=step.name in BEAM_STAGES) + _output_options() + click_options(step.params_cls),
        help=f"{step.summary}\n\n\b\nExample:\n  {EXAMPLES.get(step.name, '')}", short_help=step.summary,
    )
    if step.name == "ingest":
        command.params.insert(0, click.Argument(["source"], default="digits", required=False))
    return command


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="winnow-curate", prog_name="winnow")
def main() -> None:
    """winnow: per-example weights, noisy-label flags and coresets for a noisy training set and a
    small trusted set, written as Parquet manifests that your own trainer consumes."""


for _step in steps_mod.STEPS.values():
    main.add_command(_stage_command(_step))


main.add_command(review_cmd)


@main.command("inspect")
@click.option("--run-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("runs/default"),
              show_default=True, help="Run directory.")
@click.option("--class", "class_name", default=None, help="Only examples whose given label is this class.")
@click.option("--top", type=int, default=20, show_default=True, help="How many examples to show.")
@click.option("--min-score", type=float, default=0.0, show_default=True, help="Only noise scores at least this.")
@click.option("--issues", is_flag=True, help="Show the audit's rows instead: test/train leakage, duplicates, "
              "outliers.")
@click.option("--json", "json_out", is_flag=True, help="Print the rows as JSON on stdout.")
def inspect_cmd(run_dir: Path, class_name: str | None, top: int, min_score: float, issues: bool,
                json_out: bool) -> None:
    """Show the top flagged examples (or with --issues the audit's rows) in the terminal.

    \b
    Example:
      winnow inspect --run-dir runs/d --top 20
      winnow inspect --run-dir runs/d --issues
    """
    from rich.table import Table
    from rich.text import Text

    from winnow.stages.report.inspect import top_flagged, top_issues

    with _opened_run(run_dir, create=False) as run:
        pass
    try:
        curated = steps_mod.load_curated(run)
        rows = (top_issues(curated, top=top) if issues
                else top_flagged(curated, class_name=class_name, top=top, min_score=min_score))
    except StageMissing as exc:
        raise InputError(str(exc)) from exc
    except ValueError as exc:
        raise InputError(str(exc)) from exc
    if json_out:
        _emit_json({"run_dir": str(run.root), "rows": rows})
        return
    # Ids, class names and uris are the user's: printed as text, never as Rich markup.
    what = "data issues" if issues else "top flagged examples"
    table = Table(title=f"{what} in {escape(str(run.root))}")
    headers = ({"id": "id", "issue": "issue", "duplicate_of": "duplicate of", "split": "split",
                "outlier_score": "outlier score", "label_name": "given", "uri": "uri"} if issues else
               {"id": "id", "label_name": "given", "suggested_label_name": "suggested", "noise_score": "noise score",
                "suggested_confidence": "confidence", "weight": "weight", "uri": "uri"})
    columns = [c for c in headers if any(r.get(c) is not None for r in rows)] or ["id"]
    for c in columns:
        table.add_column(headers[c], overflow="fold", justify="right" if c in ("noise_score", "suggested_confidence",
                                                                             "weight", "outlier_score") else "left")
    for r in rows:
        table.add_row(*[Text(f"{r[c]:.3f}" if isinstance(r[c], float) else ("" if r[c] is None else str(r[c])))
                        for c in columns])
    Console().print(table)


def run_cmd(config: Path, json_out: bool, verbose: int, quiet: bool, **values: Any) -> None:
    """Run the stages of a TOML config in order (each [stage] table sets that stage's options).

    \b
    Example:
      winnow run pipeline.toml
    """
    _setup_output(verbose, quiet, json_out)
    try:
        cfg = load_config(config)
        plan = plan_from_config(cfg)
        settings = override(RunSettings.from_values(cfg), values)
    except ValueError as exc:
        raise InputError(str(exc)) from exc
    with _opened_run(settings.run_dir, create=True) as run:
        outcomes = run_plan(run, plan, settings, quiet=quiet or json_out, notes=not quiet)
    if json_out:
        _emit_json({"run_dir": str(run.root), "stages": {
            o.stage: {"cached": o.cached, "metrics": o.metrics, **({"skipped": o.record["skipped"]} if "skipped" in o.record else {})}
            for o in outcomes}})


main.add_command(click.Command(
    "run", callback=run_cmd, help=inspect.getdoc(run_cmd),
    params=[click.Argument(["config"], type=click.Path(dir_okay=False, path_type=Path)),
            *settings_options(beam=True, overrides=True), *_output_options()]))


def _open_run(path: Path) -> RunDir:
    """The run directory, created if needed; an unusable path is the user's error, not a traceback."""
    try:
        return RunDir(path)
    except OSError as exc:
        raise InputError(f"cannot use {path} as the run directory: {exc.strerror or exc}") from exc


@contextmanager
def _opened_run(path: Path, *, create: bool) -> Iterator[RunDir]:
    """The run directory for a command. A missing one is created only by a command that starts a
    run (``create``: ingest, run, demo), and removed again, with the parents it needed, if that
    command fails before anything is written into it: a mistyped ``--run-dir`` leaves no folder.
    """
    if not path.exists() and not create:
        raise InputError(f"no run directory {path}; run `winnow ingest --run-dir {path}` first "
                         "(or check the spelling of --run-dir)")
    top = None
    if not path.exists():  # the outermost folder this command will create
        top = path.absolute()
        while not top.parent.exists():
            top = top.parent
    run = _open_run(path)
    try:
        yield run
    except BaseException:
        if top is not None and not any(p.is_file() for p in top.rglob("*")):
            shutil.rmtree(top, ignore_errors=True)
        raise


def plan_from_config(cfg: dict[str, Any]) -> list[tuple[steps_mod.Step, Any]]:
    """The steps to run, with their parameters, from a parsed TOML config."""
    unknown = sorted(k for k in cfg if k not in RUN_KEYS and k not in steps_mod.STEPS)
    if unknown:
        raise ValueError(f"config: unknown key(s) or stage(s) {unknown}; stages are {', '.join(steps_mod.STEPS)}, "
                         f"top-level keys are {', '.join(sorted(RUN_KEYS))}")
    names = cfg.get("stages") or [n for n in steps_mod.STEPS if n in cfg or n in steps_mod.DEFAULT_PLAN]
    if not isinstance(names, list):
        raise ValueError(f"config: stages = {names!r}; use a list such as [\"ingest\", \"embed\"]")
    plan = []
    for name in names:
        if name not in steps_mod.STEPS:
            raise ValueError(f"config: unknown stage {name!r} in 'stages'; stages are {', '.join(steps_mod.STEPS)}")
        step = steps_mod.STEPS[name]
        table = cfg.get(name, {})
        if not isinstance(table, dict):
            raise ValueError(f"config: [{name}] must be a table of options; write [{name}] on a line of its own, "
                             "its options (key = value) on the lines below")
        plan.append((step, build_params(step.params_cls, table, where=f"config [{name}]")))
    return plan


def run_plan(run: RunDir, plan: list[tuple[steps_mod.Step, Any]], settings: RunSettings, *, quiet: bool,
             notes: bool = False) -> list[StageOutcome]:
    """Run ``plan`` in order. A stage that this run's data cannot feed (:func:`steps.skip_reason`:
    evaluate without a truth, train without images) is skipped with a line saying why; its outcome
    then has ``record == {"skipped": reason}``."""
    outcomes = []
    for step, params in plan:
        reason = steps_mod.skip_reason(run, step, params)
        if reason is not None:
            removed = steps_mod.discard_outdated(run, step.name)
            if not quiet:
                console.print(f"[bold]{step.name}[/bold] skipped: {escape(reason)}"
                              + (" (its results from earlier inputs were removed)" if removed else ""))
            outcomes.append(StageOutcome(step.name, False, {"skipped": reason}))
            continue
        outcome = execute(run, step, params, settings)
        _report_outcome(outcome, run, quiet)
        _print_notes(run, step, params, not notes)
        outcomes.append(outcome)
    return outcomes


def demo_cmd(json_out: bool, verbose: int, quiet: bool, **values: Any) -> None:
    """``winnow demo``: :data:`demo.DEMO_CONFIG` through :func:`run_plan`, then its summary (the
    help text is made from the config, below)."""
    _setup_output(verbose, quiet, json_out)
    settings = RunSettings.pop_from(values)
    started = time.time()
    plan = [(steps_mod.STEPS[name], build_params(steps_mod.STEPS[name].params_cls, options, where=f"demo [{name}]"))
            for name, options in demo_mod.DEMO_CONFIG.items()]
    with _opened_run(settings.run_dir, create=True) as run:
        run_plan(run, plan, settings, quiet=quiet or json_out)
    summary = demo_mod.demo_summary(run)
    summary["seconds"] = round(time.time() - started, 1)
    if json_out:
        _emit_json(summary)
    else:
        demo_mod.print_demo(summary, console)


main.add_command(click.Command(
    "demo", callback=demo_cmd,
    help=f"Run every stage on scikit-learn's {demo_mod.DEMO_DESCRIPTION}.\n\n\b\nExample:\n  winnow demo --run-dir "
         f"{demo_mod.DEMO_RUN_DIR}",
    params=[*settings_options(run_dir=Path(demo_mod.DEMO_RUN_DIR)),
            *_output_options(quiet_help="Only the final table; no progress bars.")]))


if __name__ == "__main__":  # pragma: no cover
    main()
