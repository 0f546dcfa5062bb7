"""`retinaug run`: every stage in order from one config, resumable at stage granularity (see stages.py).

The pipeline is one table (`STAGES`) and a loop. Each row declares a stage once: its name, the upstream stages
it reads, its config section, the function it calls and the files it writes that later stages read. Each
function takes its inputs explicitly (upstream folders, None for an optional one switched off), its config
section whole and its output folder. The loop, `--dry-run` and the up-front checks (checks.py) read the table;
`--force`, the report's stage list and `stage_timings` read its names from stage_order.py (a test holds the two
equal), which the report imports without this module (whose report stage imports the report). With
`data.folds: k` the loop runs the table's fitted stages once per fold in RUN/fold-<i>/ (`steps`, folds.py).
"""

from __future__ import annotations

import importlib
import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from .config import PipelineConfig, dump_config
from .errors import RetinaugError
from .folds import fold_data_stage, fold_name
from .io import write_text_atomic
from .lock import run_lock
from .logs import log_to
from .manifest import manifest_file, trust_root
from .ownership import owned_output
from .progress import activity
from .stage_order import stage_names, stage_records
from .stages import SOURCE, Stage, read_record

log = logging.getLogger("retinaug")


@dataclass(frozen=True)
class StageSpec:
    """One stage, declared once."""

    name: str
    needs: tuple[str, ...]  # upstream stages it reads, passed first in this order; it is switched off with any of them
    section: str | None  # its section of PipelineConfig, passed whole after them (None: it has no settings)
    verb: str  # "module:function", imported when the stage runs: verb(*needs, section, out, **uses, **borrows)
    writes: tuple[str, ...]  # globs in its folder that later stages read (a manifest brings the images it names)
    uses: dict[str, str] = field(default_factory=dict)  # upstream stage -> keyword: passed when on, else None
    keep: tuple[str, ...] = ()  # settings whose change keeps finished work: the stage resumes in place
    keeps: str = ""  # what a redo in place keeps (its own resume decides); empty: redone in an emptied folder
    always: bool = False  # redone on every run
    reads: Callable[[PipelineConfig], str | None] | None = None  # identity of the user's files it reads: an input
    borrows: Callable[[PipelineConfig], dict] | None = None  # other sections' settings it reads: hashed, passed

    @property
    def upstream(self) -> tuple[str, ...]:
        return self.needs + tuple(self.uses)

    def load_verb(self) -> Callable[..., Any]:
        """The function `verb` names (its module imported now, when the stage runs)."""
        module, _, name = self.verb.partition(":")
        return getattr(importlib.import_module(module), name)


# ---------------------------------------------------------------- the stages that are more than their verb


def data_stage(cfg, out: Path) -> None:
    """The ingest of the configured source, given the data section whole (a DataStage is an OdirConfig, a
    FolderConfig and a PhantomConfig)."""
    if cfg.source == "phantom":
        from .phantom import make_phantom

        make_phantom(cfg, out)
    elif cfg.source == "odir":
        from .ingest import prepare_odir

        prepare_odir(cfg.path, cfg, out)
    else:
        from .ingest import prepare_folder

        prepare_folder(cfg.path, cfg, out)


def data_source(cfg: PipelineConfig) -> str:
    """What the data stage reads of the user's: the dataset tree by file identity (tables and images alike)."""
    from .fingerprint import tree_identity

    return "phantom" if cfg.data.source == "phantom" else tree_identity(cfg.data.path)


def external_source(cfg: PipelineConfig) -> str | None:
    """What the experiments stage reads of the user's: the external test set, by file identity (None: none)."""
    from .experiments.external import external_identity

    return external_identity(cfg.data.external) if cfg.data.external else None


def external_setting(cfg: PipelineConfig) -> dict:
    """data.external for the experiments stage; nothing when unset, so a run without one hashes as before it existed."""
    return {"external": cfg.data.external} if cfg.data.external else {}


def synthetic_stage(generator: Path, data: Path, cfg, out: Path) -> None:
    """`generate`, in one torchrun process per GPU where there are several (this process keeps the run lock)."""
    from .generate import generate
    from .generate.launch import generate_in_processes, process_count

    processes = process_count(cfg.processes)
    if processes > 1:
        generate_in_processes(generator, data, cfg, out, processes)
    else:
        generate(generator, data, cfg, out)


def labeler_stage(data: Path, cfg, out: Path) -> None:
    """`train`, then `evaluate` on the test split (the labeler's own scores, in out/eval)."""
    from .classify import EvaluateConfig, evaluate, train
    from .manifest import load_manifest, real_rows

    train(data, cfg.train, out)
    evaluate(out, real_rows(load_manifest(data), "test"), EvaluateConfig(split="all", n_boot=cfg.n_boot), out / "eval")


def quality_stage(synthetic: Path, data: Path, cfg, out: Path, labeler: Path | None, label: Path | None) -> None:
    """`audit` of the label stage's manifest where it ran (the synthetic rows plus the labeler's verdicts, which
    accepted_only reads), else of the synthetic one."""
    from .quality import audit

    audit(label or synthetic, data, cfg, out, labeler=labeler)


def report_stage(cfg, out: Path) -> None:
    """The report reads every stage of the run it lies in."""
    from .report import build_report

    build_report(out.parent)


# `writes`: what a later stage reads (files only the report shows, such as timings and plots, are left out, so a
# redone stage with the same result redoes nothing below it).
STAGES: tuple[StageSpec, ...] = (
    StageSpec("data", (), "data", "retinaug.pipeline:data_stage", ("manifest.parquet",), reads=data_source),
    StageSpec("generator", ("data",), "generator", "retinaug.generate:finetune", ("**/*",)),
    StageSpec(
        "synthetic",
        ("generator", "data"),
        "synthetic",
        "retinaug.pipeline:synthetic_stage",
        ("manifest.parquet",),
        keep=("per_class", "ratio", "classes", "batch_size", "margin"),
    ),  # image seeds depend on class and index only
    StageSpec(
        "labeler",
        ("data",),
        "labeler",
        "retinaug.pipeline:labeler_stage",
        ("model.safetensors", "model.json", "eval/metrics.json"),
    ),
    StageSpec("label", ("labeler", "synthetic"), "label", "retinaug.classify:label", ("manifest.parquet",)),
    StageSpec(
        "selection",
        ("data",),
        "selection",
        "retinaug.select:select",
        ("manifest.parquet",),
        uses={"labeler": "labeler"},
    ),
    StageSpec("augment", ("data",), "augment", "retinaug.augment:augment", ("manifest.parquet",)),
    StageSpec(
        "experiments",
        ("data",),
        "experiments",
        "retinaug.experiments:run_experiments",
        (
            "summary.csv",
            "table.csv",
            "table.md",
            "composition.csv",
            "*/seed*/metrics.json",
            "*/seed*/model.json",
            "external/*",
            "*/seed*/external/metrics.json",
        ),  # external: with data.external only, hence globs
        uses={"label": "synthetic", "selection": "selection", "augment": "traditional"},
        keeps="seeds whose recipe is unchanged are kept",
        reads=external_source,
        borrows=external_setting,
    ),
    StageSpec(
        "quality",
        ("synthetic", "data"),
        "quality",
        "retinaug.pipeline:quality_stage",
        ("**/*",),
        uses={"labeler": "labeler", "label": "label"},
    ),
    StageSpec("report", (), None, "retinaug.pipeline:report_stage", ("index.html",), always=True),
)


def enabled_stages(cfg: PipelineConfig) -> dict[str, bool]:
    """Stage name -> on: its section's `enabled` (sections without one are always on) and every stage it needs."""
    on: dict[str, bool] = {}
    for spec in STAGES:
        section = getattr(cfg, spec.section) if spec.section else None
        on[spec.name] = getattr(section, "enabled", True) and all(on[up] for up in spec.needs)
    return on


# ---------------------------------------------------------------- resolving and planning


def resolve(cfg: PipelineConfig) -> PipelineConfig:
    """Fill the values other sections imply (written to config.yaml, so the run is explicit):
    the dataset's and the external test set's paths made absolute, the classes/amounts the scenarios need from
    synthetic and augment, the generator's train_classes when it is `synthetic` (the default, `all`, needs nothing),
    and CAS's classifier recipe."""
    cfg = cfg.model_copy(deep=True)
    if cfg.data.folds > 1 and cfg.data.test != type(cfg.data).model_fields["test"].default:
        log.warning(
            "data.test %s is not read with data.folds %d: each fold tests 1/%d of the patients",
            cfg.data.test,
            cfg.data.folds,
            cfg.data.folds,
        )
    if cfg.data.source != "phantom":
        if not cfg.data.path:
            raise RetinaugError(
                f"data.source is {cfg.data.source}: set data.path to the dataset folder (e.g. --set data.path=../shared/data/odir5k-256)"
            )
        cfg.data.path = str(Path(cfg.data.path).expanduser().resolve())
    if cfg.data.external:
        cfg.data.external = str(Path(cfg.data.external).expanduser().resolve())
    scenarios = cfg.experiments.resolve() if cfg.experiments.enabled else []
    syn = [s for s in scenarios if s.synthetic > 0]
    syn_classes = list(dict.fromkeys(c for s in syn for c in s.added_classes("synthetic")))
    if cfg.synthetic.classes is None and syn_classes:
        cfg.synthetic.classes = syn_classes
    if cfg.synthetic.per_class is None and cfg.synthetic.ratio is None:
        cfg.synthetic.ratio = round(cfg.synthetic.margin * max([s.synthetic for s in syn], default=1.0), 4)
    method_cfg = cfg.generator.method_config()
    if method_cfg.train_classes == "synthetic":
        if not cfg.synthetic.classes:
            raise RetinaugError(
                "generator train_classes is synthetic, but no synthetic classes are known: set synthetic.classes"
            )
        method_cfg.train_classes = list(cfg.synthetic.classes)
    if isinstance(method_cfg.train_classes, list) and (
        unlearned := [c for c in cfg.synthetic.classes or [] if c not in method_cfg.train_classes]
    ):
        raise RetinaugError(
            f"synthetic.classes {', '.join(unlearned)} are not in generator train_classes {method_cfg.train_classes}"
        )
    if cfg.quality.cas and cfg.quality.cas_recipe is None:  # CAS trains the scenarios' classifier recipe (first seed)
        cfg.quality.cas_recipe = cfg.experiments.train.model_copy(update={"seed": cfg.experiments.seed_list[0]})
    trad = [s for s in scenarios if s.traditional > 0]
    if cfg.augment.ratio is None:
        cfg.augment.ratio = max([s.traditional for s in trad], default=1.0)
    if cfg.augment.classes is None:
        cfg.augment.classes = list(dict.fromkeys(c for s in trad for c in s.added_classes("traditional"))) or None
    return cfg


def parse_force(force: Iterable[str]) -> set[str]:
    names = {f.strip() for item in force for f in item.split(",") if f.strip()}
    if "all" in names:
        return set(stage_names())
    unknown = sorted(names - set(stage_names()))
    if unknown:
        raise RetinaugError(
            f"--force: unknown stage(s) {', '.join(unknown)}; stages: {', '.join(stage_names())} (or all)"
        )
    return names


@dataclass(frozen=True)
class Step:
    """One stage in one run folder: the stages of a k-fold run's fold i run in RUN/fold-<i> (see folds.py) and are
    labelled `fold-<i>/<stage>`; `make` builds its record keeper when it is reached (its inputs are the output
    hashes its upstream steps recorded by then)."""

    label: str
    spec: StageSpec
    upstream: tuple[str, ...]  # labels of the steps it reads
    on: bool
    off_why: str
    make: Callable[[], Stage]


def _stage(
    spec: StageSpec,
    cfg: PipelineConfig,
    where: Path,
    on: dict[str, bool],
    run: Path,
    label: str,
    upstream: dict[str, Path] | None = None,
    run_fn: Callable[..., Any] | None = None,
    extra: dict | None = None,
) -> Stage:
    """The record keeper of stage `label` in folder `where`/name: its inputs are the output hashes its upstream stages
    recorded (a switched-off upstream counts as 'disabled', whatever an older run left). `upstream` overrides where
    the upstream folders are, `run_fn` the function called, `extra` adds to the hashed config (a fold's data
    split); output names are relative to the run folder `run`."""
    section = getattr(cfg, spec.section) if spec.section else None
    borrowed = spec.borrows(cfg) if spec.borrows is not None else {}
    result = {**(section.result_config() if section is not None else {}), **borrowed, **(extra or {})}
    folders = upstream or {up: where / up if on[up] else None for up in spec.upstream}
    inputs = {
        up: read_record(f).get("output_hash", "absent") if f is not None else "disabled" for up, f in folders.items()
    }
    if spec.reads is not None and upstream is None and (source := spec.reads(cfg)) is not None:
        inputs[SOURCE] = source
    out = where / spec.name
    # an `upstream` given in place of the table's (a fold's split of RUN/data) is what the function reads first
    needs = list(upstream.values()) if upstream else [folders[up] for up in spec.needs]
    uses = {} if upstream else {keyword: folders[up] for up, keyword in spec.uses.items()}
    return Stage(
        label,
        out,
        result,
        inputs,
        lambda: (run_fn or spec.load_verb())(*needs, section, out, **uses, **borrowed),
        spec.writes,
        run,
        clean_on_change=not spec.keeps,
        keep_when={k: v for k, v in result.items() if k not in spec.keep} if spec.keep else None,
    )


def steps(cfg: PipelineConfig, run: Path) -> list[Step]:
    """Every stage the run goes through, in order: the table once, or for `data.folds: k` the ingest, then every
    fitted stage and a report per fold, then the report that pools the folds."""
    on = enabled_stages(cfg)

    def off_why(spec: StageSpec) -> str:
        off = [up for up in spec.needs if not on[up]]
        return f"needs {', '.join(off)} (disabled)" if off else "disabled in the config"

    def step(spec: StageSpec, where: Path, prefix: str = "") -> Step:
        upstream = tuple(f"{prefix}{up}" for up in spec.upstream)
        return Step(
            prefix + spec.name,
            spec,
            upstream,
            on[spec.name],
            "" if on[spec.name] else off_why(spec),
            lambda: _stage(spec, cfg, where, on, run, prefix + spec.name),
        )

    def fold_split(i: int) -> Step:
        """Fold i's data stage: RUN/data split for the fold (folds.fold_data_stage)."""
        where, label = run / fold_name(i), f"{fold_name(i)}/data"
        return Step(
            label,
            STAGES[0],
            ("data",),
            True,
            "",
            lambda: _stage(
                STAGES[0],
                cfg,
                where,
                on,
                run,
                label,
                upstream={"data": run / "data"},
                run_fn=partial(fold_data_stage, fold=i),
                extra={"folds": k, "fold": i},
            ),
        )

    k = cfg.data.folds
    if k == 1:
        return [step(spec, run) for spec in STAGES]
    out = [step(STAGES[0], run)]
    for i in range(k):  # the fitted stages and a report per fold
        out += [fold_split(i), *(step(spec, run / fold_name(i), f"{fold_name(i)}/") for spec in STAGES[1:])]
    return out + [step(STAGES[-1], run)]


def _prepare(config: PipelineConfig, run: Path, adopt: bool) -> PipelineConfig:
    """The resolved config, after every up-front check: what the run folder holds first (ownership.py: nothing
    retinaug did not write, no dataset inside it; it lists folders only, so a refusal comes at once), then the
    settings (checks.py, which builds the networks)."""
    from .checks import check_pipeline
    from .ownership import check_run_folder

    cfg = resolve(config)
    on = enabled_stages(cfg)
    datasets = [cfg.data.path] if cfg.data.path else []
    if cfg.data.external and on["experiments"]:  # read-only for retinaug, like the dataset: never inside the run folder
        datasets.append(manifest_file(cfg.data.external).parent)
    check_run_folder(run, [run / st.label for st in steps(cfg, run) if st.on], datasets, adopt)  # a step's folder
    check_pipeline(cfg, run, on)
    return cfg


def plan_pipeline(
    config: PipelineConfig, out: str | Path, force: Iterable[str] = (), adopt: bool = False
) -> list[tuple[str, str, str]]:
    """What `run_pipeline` would do, stage by stage, without doing or writing anything: (stage, action, why),
    action one of skip, resume, run, disabled, or 'run?' for a finished stage whose upstream will run (it is
    redone only if that upstream's output changes). Runs the same up-front checks as `run_pipeline`.
    A k-fold run's fold stages are labelled fold-<i>/<stage>; --force names a stage of every fold."""
    forced = parse_force(force)
    run = Path(out)
    cfg = _prepare(config, run, adopt)
    plan, will_run = [], set()
    for st in steps(cfg, run):
        if not st.on:
            plan.append((st.label, "disabled", st.off_why))
            continue
        action, why = st.make().decision(force=st.spec.name in forced or st.spec.always)
        waiting = [up for up in st.upstream if up in will_run]
        if action == "skip" and waiting:
            action, why = "run?", f"finished; redone if the output of {', '.join(waiting)} changes"
        if st.spec.always:
            why = "always rebuilt (seconds)"
        elif st.spec.keeps and action != "skip" and why != "never run":
            why += f"; {st.spec.keeps}"
        if action != "skip":
            will_run.add(st.label)
        plan.append((st.label, "run" if action == "fresh" else action, why))
    return plan


def run_pipeline(config: PipelineConfig, out: str | Path, force: Iterable[str] = (), adopt: bool = False) -> Path:
    """Run (or resume) every enabled stage into `out`; returns the report path.

    `out` must be new, empty or a run folder (`adopt`: an existing folder whose other files are left alone); a
    stage folder holding files retinaug did not write, or a dataset inside `out`, is refused before anything runs.
    Holds the run lock (`out/.lock`) throughout; checks every enabled stage's settings before the first one
    starts; writes `out/config.yaml` (resolved, every default), `out/run.log`, `out/logs/<stage>.log` and
    `out/<stage>/stage.json` (for k folds also `out/fold-<i>/...`, see folds.py). Stages whose config, inputs and
    outputs are unchanged since they finished are skipped."""
    forced = parse_force(force)
    run = Path(out)
    with run_lock(run, "run"):
        cfg = _prepare(config, run, adopt)
        with owned_output(run, "--out", adopt):
            _run_steps(cfg, run, forced)
    return run / "report" / "index.html"


def _run_steps(cfg: PipelineConfig, run: Path, forced: set[str]) -> None:
    """Every step in order, logged to RUN/run.log and RUN/logs/<stage>.log (the lock and the run folder held)."""
    if cfg.data.path:  # named in the config: manifests pointing into the dataset may be loaded
        trust_root(cfg.data.path)
    write_text_atomic(run / "config.yaml", dump_config(cfg))
    for i in range(cfg.data.folds if cfg.data.folds > 1 else 0):  # a fold folder says what it is part of
        write_text_atomic(
            run / fold_name(i) / "config.yaml",
            f"# fold {i} of {cfg.data.folds} of the run in {run.resolve()} (its config.yaml)\n" + dump_config(cfg),
        )
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    t_start = time.perf_counter()
    with log_to(run / "run.log"):
        log.info("run %s -> %s%s", cfg.name, run.resolve(), f" ({cfg.data.folds} folds)" if cfg.data.folds > 1 else "")
        for st in steps(cfg, run):
            if not st.on:
                log.info("[%s] %s", st.label, st.off_why)
                continue
            with log_to(run / "logs" / f"{st.label}.log"), activity(f"stage {st.label}"):
                st.make().execute(force=st.spec.name in forced or st.spec.always)
        log.info("pipeline finished in %.1f s", time.perf_counter() - t_start)


def stage_timings(run: str | Path) -> list[tuple[str, str, float | None]]:
    """(stage, status, seconds) for the stages that have a record (see `stage_records`)."""
    return [(label, rec.get("status", "?"), rec.get("seconds")) for label, rec in stage_records(run)]


__all__ = [
    "STAGES",
    "StageSpec",
    "Step",
    "steps",
    "enabled_stages",
    "parse_force",
    "plan_pipeline",
    "resolve",
    "run_pipeline",
    "stage_names",
    "stage_records",
    "stage_timings",
]
