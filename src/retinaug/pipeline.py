"""`retinaug run`: every stage in order from one config, resumable at stage granularity (see stages.py).

data -> generator -> synthetic -> labeler -> label -> selection -> augment -> experiments -> quality -> report.
Each stage calls the public function of its module; this file only decides what runs, with which inputs,
and keeps the records and logs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from .config import PipelineConfig, dump_config
from .errors import RetinaugError
from .io import write_text_atomic
from .manifest import load_manifest, manifest_file
from .stages import Stage, read_record

log = logging.getLogger("retinaug")

STAGES = ("data", "generator", "synthetic", "labeler", "label", "selection", "augment", "experiments", "quality", "report")
# Upstream stages whose recorded output hash is part of each stage's inputs.
UPSTREAM: dict[str, tuple[str, ...]] = {
    "data": (),
    "generator": ("data",),
    "synthetic": ("data", "generator"),
    "labeler": ("data",),
    "label": ("synthetic", "labeler"),
    "selection": ("data", "labeler"),
    "augment": ("data",),
    "experiments": ("data", "label", "selection", "augment"),
    "quality": ("data", "label", "labeler"),
    "report": (),
}


def resolve(cfg: PipelineConfig) -> PipelineConfig:
    """Fill the values other sections imply (written to config.yaml, so the run is explicit):
    the dataset path made absolute, the classes/amounts the scenarios need from synthetic and augment, and the
    generator's train_classes when it is `synthetic` (the default, `all`, needs nothing)."""
    cfg = cfg.model_copy(deep=True)
    if cfg.data.source != "phantom":
        if not cfg.data.path:
            raise RetinaugError(f"data.source is {cfg.data.source}: set data.path to the dataset folder (e.g. --set data.path=../shared/data/odir5k-256)")
        cfg.data.path = str(Path(cfg.data.path).expanduser().resolve())
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
            raise RetinaugError("generator train_classes is synthetic, but no synthetic classes are known: set synthetic.classes")
        method_cfg.train_classes = list(cfg.synthetic.classes)
    if isinstance(method_cfg.train_classes, list) and (unlearned := [c for c in cfg.synthetic.classes or [] if c not in method_cfg.train_classes]):
        raise RetinaugError(f"synthetic.classes {', '.join(unlearned)} are not in generator train_classes {method_cfg.train_classes}")
    trad = [s for s in scenarios if s.traditional > 0]
    if cfg.augment.ratio is None:
        cfg.augment.ratio = max([s.traditional for s in trad], default=1.0)
    if cfg.augment.classes is None:
        cfg.augment.classes = list(dict.fromkeys(c for s in trad for c in s.added_classes("traditional"))) or None
    return cfg


@contextlib.contextmanager
def _log_to(path: Path) -> Iterator[None]:
    """Copy retinaug's log records into `path` while the block runs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    log.addHandler(handler)
    try:
        yield
    finally:
        log.removeHandler(handler)
        handler.close()


def setup_console_logging(level: int = logging.INFO) -> None:
    """Rich console output for retinaug's loggers (idempotent)."""
    from rich.logging import RichHandler

    from .progress import console

    if not any(isinstance(h, RichHandler) for h in log.handlers):
        handler = RichHandler(console=console, show_path=False, markup=False, log_time_format="%H:%M:%S")
        log.addHandler(handler)
    log.setLevel(level)


def _stage_inputs(run: Path, name: str, on: dict[str, bool]) -> dict[str, str]:
    """Upstream output hashes; a switched-off upstream counts as 'disabled', whatever an older run left."""
    return {up: read_record(run / up).get("output_hash", "absent") if on[up] else "disabled" for up in UPSTREAM[name]}


def _synthetic_df(run: Path):
    return load_manifest(run / "synthetic") if manifest_file(run / "synthetic").is_file() else None


def _work(cfg: PipelineConfig, run: Path) -> dict[str, tuple[bool, object, callable, list[Path]]]:
    """stage name -> (enabled, config that decides its result, work function, key outputs)."""
    from . import experiment

    data_dir, gen_dir, syn_dir, lab_dir = run / "data", run / "generator", run / "synthetic", run / "labeler"
    gen_on = cfg.generator.enabled
    on = {"data": True, "generator": gen_on, "synthetic": gen_on and cfg.synthetic.enabled, "labeler": cfg.labeler.enabled,
          "label": gen_on and cfg.synthetic.enabled and cfg.labeler.enabled, "selection": cfg.selection.enabled,
          "augment": cfg.augment.enabled, "experiments": cfg.experiments.enabled,
          "quality": cfg.quality.enabled and gen_on and cfg.synthetic.enabled, "report": True}

    def labeler_model() -> Path | None:  # an older run's labeler is not used when the labeler is switched off
        return lab_dir if on["labeler"] and (lab_dir / "model.safetensors").is_file() else None

    def data() -> None:
        d = cfg.data
        if d.source == "phantom":
            from .phantom import make_phantom

            make_phantom(n=d.n, size=d.size, seed=d.seed, out=data_dir, proportions=d.proportions, val=d.val, test=d.test)
        elif d.source == "odir":
            from .ingest import prepare_odir

            prepare_odir(d.path, data_dir, val=d.val, test=d.test, seed=d.seed)
        else:
            from .ingest import prepare_folder

            prepare_folder(d.path, data_dir, val=d.val, test=d.test, seed=d.seed)

    def generator() -> None:
        from .generate import finetune

        finetune(data_dir, cfg.generator.method, cfg.generator.method_config(), gen_dir)

    def synthetic() -> None:
        from .generate import generate

        generate(gen_dir, data_dir, syn_dir, cfg.synthetic)

    def labeler() -> None:
        from .classify import evaluate, train

        train(data_dir, cfg.labeler.train, lab_dir)
        df = load_manifest(data_dir)
        evaluate(lab_dir, df[(df["split"] == "test") & (df["origin"] == "real")], lab_dir / "eval", n_boot=cfg.experiments.n_boot)

    def label() -> None:
        from .classify import label as label_fn

        if labeler_model() is None:
            raise RetinaugError("the label stage needs the labeler: enable labeler (labeler.enabled: true)")
        label_fn(lab_dir, syn_dir, policy=cfg.label.policy, threshold=cfg.label.threshold)

    def selection() -> None:
        from .quality.config import SelectConfig
        from .select import select

        sel_cfg = SelectConfig(**cfg.selection.model_dump(exclude={"enabled"}))
        select(load_manifest(data_dir), sel_cfg, run / "selection", labeler_model())

    def augment() -> None:
        from .augment import augment as augment_fn

        df = load_manifest(data_dir)
        a = cfg.augment
        augment_fn(df[(df["split"] == "train") & (df["origin"] == "real")], ratio=a.ratio, classes=tuple(a.classes or ()) or None, seed=a.seed, out=run / "augment")

    def experiments() -> None:
        exp_cfg = experiment.ExperimentConfig(**cfg.experiments.model_dump(exclude={"enabled"}))
        experiment.run_experiments(exp_cfg, run, ignore=[s for s in ("synthetic", "selection", "augment") if not on[s]])

    def quality() -> None:
        from .quality import audit
        from .quality.config import AuditConfig

        syn = _synthetic_df(run)
        if syn is None:
            raise RetinaugError("the quality stage needs synthetic images: enable generator and synthetic")
        audit_cfg = AuditConfig(**cfg.quality.model_dump(exclude={"enabled"}))
        audit(syn, load_manifest(data_dir), run / "quality", extractor=audit_cfg.extractor, labeler=labeler_model(), config=audit_cfg)

    def report() -> None:
        from .report import build_report

        build_report(run)

    return {
        "data": (on["data"], cfg.data, data, [data_dir / "manifest.parquet"]),
        "generator": (on["generator"], {"method": cfg.generator.method, "config": cfg.generator.method_config()}, generator, [gen_dir / "config.json"]),
        "synthetic": (on["synthetic"], cfg.synthetic, synthetic, [syn_dir / "manifest.parquet"]),
        "labeler": (on["labeler"], cfg.labeler, labeler, [lab_dir / "model.safetensors"]),
        "label": (on["label"], cfg.label, label, [syn_dir / "manifest.parquet"]),
        "selection": (on["selection"], cfg.selection, selection, [run / "selection" / "manifest.parquet"]),
        "augment": (on["augment"], cfg.augment, augment, [run / "augment" / "manifest.parquet"]),
        "experiments": (on["experiments"], cfg.experiments, experiments, [run / "experiments" / "summary.csv"]),
        "quality": (on["quality"], cfg.quality, quality, [run / "quality" / "audit.json"]),
        "report": (True, {}, report, [run / "report" / "index.html"]),
    }


def parse_force(force: Iterable[str]) -> set[str]:
    names = {f.strip() for item in force for f in item.split(",") if f.strip()}
    if "all" in names:
        return set(STAGES)
    unknown = sorted(names - set(STAGES))
    if unknown:
        raise RetinaugError(f"--force: unknown stage(s) {', '.join(unknown)}; stages: {', '.join(STAGES)} (or all)")
    return names


# Settings that only say how many images to make: changing them lets `generate` keep the images already written
# (each image's seed depends on its class and index only), so the synthetic folder is not wiped for them.
AMOUNTS = {"synthetic": {"per_class", "ratio", "classes", "batch_size", "margin"}}


def _stage(run: Path, name: str, work: dict) -> Stage:
    _, stage_cfg, fn, outputs = work[name]
    # label writes into synthetic/, so its record lives in label/ and its folder is never wiped
    on = {n: w[0] for n, w in work.items()}
    keep_when = stage_cfg.model_dump(mode="json", exclude=AMOUNTS[name]) if name in AMOUNTS else None
    return Stage(name, run / name, stage_cfg, _stage_inputs(run, name, on), fn, outputs,
                 clean_on_change=name not in ("label", "experiments", "report"), keep_when=keep_when)


def plan_pipeline(config: PipelineConfig, out: str | Path, force: Iterable[str] = ()) -> list[tuple[str, str, str]]:
    """What `run_pipeline` would do, stage by stage, without doing or writing anything: (stage, action, why),
    action one of skip, resume, run, disabled, or 'run?' for a finished stage whose upstream will run (it is
    redone only if that upstream's output changes)."""
    forced = parse_force(force)
    run = Path(out)
    cfg = resolve(config)
    work = _work(cfg, run)
    plan, will_run = [], set()
    for name in STAGES:
        if not work[name][0]:
            plan.append((name, "disabled", "disabled in the config"))
            continue
        action, why = _stage(run, name, work).decision(force=name in forced or name == "report")
        waiting = [up for up in UPSTREAM[name] if up in will_run]
        if action == "skip" and waiting:
            action, why = "run?", f"finished; redone if the output of {', '.join(waiting)} changes"
        if name == "report":
            why = "always rebuilt (seconds)"
        elif name == "experiments" and action != "skip" and why != "never run":
            why += "; seeds whose recipe is unchanged are kept"
        if action != "skip":
            will_run.add(name)
        plan.append((name, "run" if action == "fresh" else action, why))
    return plan


def run_pipeline(config: PipelineConfig, out: str | Path, force: Iterable[str] = ()) -> Path:
    """Run (or resume) every enabled stage into `out`; returns the report path.

    Writes `out/config.yaml` (resolved, every default), `out/run.log`, `out/logs/<stage>.log` and
    `out/<stage>/stage.json`. Stages whose config and inputs are unchanged since they finished are skipped;
    the `label` stage rewrites the synthetic manifest in place, so it shares the synthetic folder."""
    forced = parse_force(force)
    run = Path(out)
    run.mkdir(parents=True, exist_ok=True)
    cfg = resolve(config)
    write_text_atomic(run / "config.yaml", dump_config(cfg))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    work = _work(cfg, run)
    t_start = time.perf_counter()
    with _log_to(run / "run.log"):
        log.info("run %s -> %s", cfg.name, run.resolve())
        for name in STAGES:
            if not work[name][0]:
                log.info("[%s] disabled in the config", name)
                continue
            with _log_to(run / "logs" / f"{name}.log"):
                _stage(run, name, work).execute(force=name in forced or name == "report")
        log.info("pipeline finished in %.1f s", time.perf_counter() - t_start)
    return run / "report" / "index.html"


def stage_timings(run: str | Path) -> list[tuple[str, str, float | None]]:
    """(stage, status, seconds) for the stages that have a record."""
    out = []
    for name in STAGES:
        rec = read_record(Path(run) / name)
        if rec:
            out.append((name, rec.get("status", "?"), rec.get("seconds")))
    return out
