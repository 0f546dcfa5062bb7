"""CLI verbs of the pipeline: `run`, `demo`, `experiment`, `init-config`, `report` (thin wrappers).

The verbs that write into a run folder take its lock before anything slow is imported, so a second process on the
same folder is refused at once."""

from __future__ import annotations

from pathlib import Path

import typer

from ..errors import RetinaugError
from .app import app

PRESET_HELP = "Packaged preset to start from: demo, odir-cpu or paper (a CONFIG file then overrides it)."
SET_HELP = "Override one setting, KEY=VALUE with a dotted key (repeatable), e.g. --set experiments.seeds=2."


def _print_results(run: Path, report: Path | None) -> None:
    from ..pipeline import stage_timings

    timings = stage_timings(run)
    if timings:
        typer.echo("\nStage timings", err=True)
        width = max(12, *(len(name) + 1 for name, _, _ in timings))
        for name, status, secs in timings:
            typer.echo(f"  {name:<{width}} {status:<8} {'' if secs is None else f'{secs:8.1f} s'}", err=True)
    from ..folds import results_dir

    table = results_dir(run) / "table.md"
    if table.is_file():
        typer.echo("\n" + table.read_text())
    if report is not None:
        typer.echo(f"report: {report.resolve()}")


ADOPT_HELP = (
    "Use an existing folder that is not a retinaug run as the run folder: retinaug writes only its own files "
    "there (config.yaml, run.log, logs/, the stage folders) and leaves the others alone. A stage folder holding "
    "files retinaug did not write, or a dataset inside the folder, is refused all the same."
)


def _run(
    config: Path | None, preset: str | None, set_: list[str], out: Path, force: list[str], adopt: bool = False
) -> None:
    from ..lock import run_lock
    from ..ownership import foreign

    # not a run folder yet: the up-front checks before a lock is written there
    if not out.exists() or foreign(out, limit=1):
        from ..config import load_config
        from ..pipeline import plan_pipeline

        plan_pipeline(load_config(config, preset, set_), out, force=force, adopt=adopt)
    with run_lock(out, "run"):  # first: a second process exits here, before the slow imports below
        from ..config import load_config
        from ..pipeline import run_pipeline

        report = run_pipeline(load_config(config, preset, set_), out, force=force, adopt=adopt)
    _print_results(out, report)


@app.command("run")
def run_cmd(
    config: Path = typer.Argument(
        None, help="Pipeline YAML (see `retinaug init-config`); optional with --preset.", dir_okay=False
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Run folder, e.g. runs/NAME (created; re-running resumes it)."),
    preset: str = typer.Option(None, "--preset", help=PRESET_HELP),
    set_: list[str] = typer.Option([], "--set", help=SET_HELP),
    force: list[str] = typer.Option(
        [],
        "--force",
        help="Redo this stage (repeatable or comma-separated; 'all' redoes every stage). experiments keeps each fit whose recipe and images are unchanged and re-aggregates; delete a fit's folder to retrain it.",
    ),
    dry_run: bool = typer.Option(
        False,
        "--dry-run",
        help="Check every setting and what --out holds, and say what each stage would do (skip, resume, run) and why; writes nothing.",
    ),
    adopt: bool = typer.Option(False, "--adopt", help=ADOPT_HELP),
) -> None:
    """Run every stage (data -> generator -> synthetic -> labeler -> label -> selection -> augment ->
    experiments -> quality -> report) from one config. Every enabled stage's settings are checked before the
    first one starts. Finished stages whose config, inputs and outputs are unchanged are skipped, an interrupted
    one is resumed, so re-running the same command after a crash continues. One process at a time works in a
    run folder (RUN/.lock). Check first with --dry-run what a changed setting would redo.

    retinaug deletes or replaces only files it wrote (each folder's .owned.json lists them): an --out that exists and
    is not a run, a stage folder holding other files, or a dataset inside --out is refused before anything runs."""
    if config is None and preset is None:
        raise RetinaugError("give a CONFIG file or --preset NAME (e.g. `retinaug run --preset demo --out runs/demo`)")
    if dry_run:
        from ..config import load_config
        from ..lock import lock_holder
        from ..pipeline import plan_pipeline

        plan = plan_pipeline(load_config(config, preset, set_), out, force=force, adopt=adopt)
        width = max(12, *(len(name) + 1 for name, _, _ in plan))
        for name, action, why in plan:
            typer.echo(f"{name:<{width}} {action:<9} {why}")
        if holder := lock_holder(out):
            typer.echo(
                f"note: {out} is in use by {holder}; a run now would be refused, and the plan may change when it ends",
                err=True,
            )
        return
    _run(config, preset, set_, out, force, adopt)


@app.command("demo")
def demo_cmd(
    out: Path = typer.Option(Path("runs/demo"), "--out", "-o", help="Run folder."),
    config: Path = typer.Option(
        None, "--config", "-c", help="Pipeline YAML merged over the demo preset.", dir_okay=False
    ),
    set_: list[str] = typer.Option([], "--set", help=SET_HELP),
    force: list[str] = typer.Option([], "--force", help="Redo this stage (or 'all')."),
) -> None:
    """The whole pipeline on the embedded phantom dataset (the `demo` preset): 3-7 minutes on 2 cores of
    a recent CPU, about 19 on an older AVX2-only one; no download. Prints the report's path and the headline table.
    `retinaug demo --config FILE` is `retinaug run FILE --preset demo`."""
    _run(config, "demo", set_, out, force)


@app.command("experiment")
def experiment_cmd(
    config: Path = typer.Option(
        None, "--config", "-c", help="Pipeline YAML; its `experiments` section is used.", dir_okay=False
    ),
    run: Path = typer.Option(
        ..., "--run", help="Run folder holding data/ (and label/, selection/, augment/ when scenarios need them)."
    ),
    preset: str = typer.Option(None, "--preset", help=PRESET_HELP),
    set_: list[str] = typer.Option([], "--set", help=SET_HELP),
) -> None:
    """Train and evaluate every scenario x seed on the same real test patients, then aggregate (mean and
    95% CI over seeds, paired differences vs real-only). Resumable: finished seeds are skipped.

    Reads RUN/data, and the labelled synthetic images (RUN/label), the t-SNE selection (RUN/selection) and the
    traditional augmentation rows (RUN/augment) where they exist and their stage is enabled in the config.
    Writes RUN/experiments/<scenario>/seed<k>/ (fit.log, metrics.json, ...), summary.csv, table.md, table.csv,
    composition.csv.

    An external test set (a dataset folder made by `retinaug prepare`): --set data.external=PATH (or data.external in
    the config). Every fit is then also scored on it, after the patients with a near-copy of the run's train/val
    images are dropped, into RUN/experiments/<scenario>/seed<k>/external/ and RUN/experiments/external/; finished
    fits are scored without retraining.

    In parallel on Ray (pip install "retinaug\\[ray]"; same results): --set experiments.executor=ray
    --set experiments.workers=4 on this machine, or --set experiments.ray.address=HEAD:6379 on a cluster
    whose nodes share the run folder; GPUs per fit: --set experiments.ray.num_gpus=0.25 (docs/scaling.md)."""
    from ..folds import fold_count, fold_name, is_pooled
    from ..lock import run_lock

    if is_pooled(run):
        k = fold_count(run)
        raise RetinaugError(
            f"{run} is a {k}-fold run: its experiments lie in {run}/{fold_name(0)} ... {fold_name(k - 1)}; run "
            f"`retinaug experiment {run}/{fold_name(0)}` per fold (then `retinaug report {run}` pools them), or `retinaug run`"
        )
    with run_lock(run, "experiment"):
        from ..config import load_config
        from ..experiments import run_experiments
        from ..manifest import manifest_file
        from ..ownership import owned_output
        from ..pipeline import enabled_stages
        from ..stages import read_record

        cfg = load_config(config, preset, set_)
        on = enabled_stages(cfg)

        def finished(stage: str) -> Path | None:
            """A stage's folder when its stage is on and it finished (or was made by hand: no record)."""
            folder = run / stage
            usable = (
                on[stage] and manifest_file(folder).is_file() and read_record(folder).get("status", "done") == "done"
            )
            return folder if usable else None

        # refused when it holds files retinaug did not write
        with owned_output(run / "experiments", "experiments folder"):
            run_experiments(
                run / "data",
                cfg.experiments,
                run / "experiments",
                synthetic=finished("label"),
                traditional=finished("augment"),
                selection=finished("selection"),
                external=cfg.data.external,
            )
    _print_results(run, None)


@app.command("init-config")
def init_config_cmd(
    preset: str = typer.Option("demo", "--preset", help=PRESET_HELP),
    output: Path = typer.Option(None, "--output", "-o", help="Write here instead of printing (refuses to overwrite)."),
    config: Path = typer.Option(
        None, "--config", "-c", help="A pipeline YAML merged over the preset (written out whole).", dir_okay=False
    ),
    set_: list[str] = typer.Option([], "--set", help=SET_HELP),
) -> None:
    """Write a preset's full config (every key with its value) to edit and pass to `retinaug run`."""
    from ..config import dump_config, load_config
    from ..io import write_text_atomic

    source = f"preset {preset}" + (f" + {config}" if config is not None else "")
    text = f"# retinaug pipeline config (from {source}); every key is listed with its value.\n" + dump_config(
        load_config(config, preset, set_)
    )
    if output is None:
        typer.echo(text, nl=False)
        return
    if output.exists():
        raise RetinaugError(f"{output} exists; remove it or choose another -o path")
    write_text_atomic(output, text)
    typer.echo(f"wrote {output}")


@app.command("report")
def report_cmd(run: Path = typer.Argument(..., help="Run folder (runs/NAME).", file_okay=False)) -> None:
    """Render RUN/report/index.html: a self-contained page (figures embedded) with every stage's results;
    sections whose stage has not run say so. Refused while another process works in RUN."""
    from ..lock import run_lock

    if not run.is_dir():
        raise RetinaugError(f"run folder {run} not found (make one with `retinaug run CONFIG --out {run}`)")
    with run_lock(run, "report"):
        from ..report import build_report

        typer.echo(f"report: {build_report(run).resolve()}")
