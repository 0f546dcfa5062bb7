"""Up-front checks of a pipeline config: everything that can be known before the first stage starts is checked
then, so a bad setting fails `--dry-run` and `run` in seconds instead of after an hour of generator training.

What pydantic checks when the config is read (config.py and the stage configs): key names, value ranges (finite
numbers, seeds numpy takes, counts bounded below what would fill the memory: fields.py), options the data source
does not read, class codes, task names, timm backbone names, the DDPM UNet's shape. What is checked here, across sections and against
the data: the generator's base model folder, feature extractors, each scenario's inputs (a stage switched off, an
augment ratio below a multiplier, Ray for `executor: ray`), the external test set (a prepared dataset sharing at
least 2 classes with every scenario's task), and the class counts per split of the data the run will see (planned for the
phantom; read from a finished data stage otherwise) against what every enabled stage will ask of them.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd

from .classes import TASKS, resolve_task
from .config import PipelineConfig
from .errors import ManifestError, RetinaugError
from .features import imagenet_backbone, imagenet_ready, imagenet_weights_file
from .stages import config_hash, read_record

EXTRACTORS = ("auto", "labeler", "pixels")


def check_pipeline(cfg: PipelineConfig, run: Path, on: dict[str, bool]) -> None:
    """Raise one RetinaugError listing every problem of the (resolved) config `cfg` for run folder `run`."""
    problems = (
        _generator(cfg, on)
        + _scenarios(cfg, on)
        + _external(cfg, on)
        + _extractors(cfg, on)
        + _classifier_weights(cfg, on)
    )
    try:
        data = planned_data(cfg, run)
    except RetinaugError as exc:
        problems.append(f"data: {exc}")
        data = None
    if data is not None and cfg.data.folds > 1:
        from .split import fold_split

        for i in range(cfg.data.folds):  # every fold's split must serve every stage
            try:
                fold = fold_split(data, i, cfg.data.folds, cfg.data.val, cfg.data.seed)
            except RetinaugError as exc:
                problems.append(f"data: {exc}")
                break
            problems += [f"fold {i}: {msg}" for msg in _counts(cfg, on, fold, "fewer folds (data.folds)")]
    elif data is not None:
        problems += _counts(cfg, on, data)
    if problems:
        raise RetinaugError("the config cannot run (nothing was started):\n  - " + "\n  - ".join(problems))


def planned_data(cfg: PipelineConfig, run: Path) -> pd.DataFrame | None:
    """label and split of every real image the run will use, when that is cheap to know: the phantom's plan, or
    the manifest of a finished data stage made with this data config; None otherwise (a dataset not ingested yet,
    or a manifest that cannot be read: the data stage is then redone)."""
    d = cfg.data
    if d.source == "phantom":
        from .phantom import plan_phantom

        patients = plan_phantom(d.n, d.proportions, d.seed, d.val, d.test)
        return pd.concat([patients, patients], ignore_index=True)  # two eyes per patient
    if not Path(d.path).is_dir():
        raise RetinaugError(f"data.path {d.path} is not a folder")
    rec = read_record(run / "data")
    if rec.get("status") == "done" and rec.get("config_hash") == config_hash(d.result_config()):
        from .manifest import load_manifest, real_rows

        try:
            df = load_manifest(run / "data")
        except ManifestError:
            return None
        return pd.concat([real_rows(df, s) for s in ("train", "val", "test")], ignore_index=True)
    return None


def _generator(cfg: PipelineConfig, on: dict[str, bool]) -> list[str]:
    problems = []
    if on["generator"]:
        from .generate import create_generator

        try:
            create_generator(cfg.generator.method, cfg.generator.method_config()).check()
        except RetinaugError as exc:
            problems.append(f"generator: {exc}")
    if on["synthetic"]:
        from .generate.launch import process_count

        try:
            process_count(cfg.synthetic.processes)
        except RetinaugError as exc:
            problems.append(f"synthetic: {exc}")
    if on["label"] and cfg.label.policy == "agree":
        known = resolve_task(cfg.labeler.train.task)
        if missing := [c for c in cfg.synthetic.classes or [] if c not in known]:
            problems.append(
                f"label.policy agree can accept no image of {', '.join(missing)}: labeler.train.task "
                f"{cfg.labeler.train.task} lacks them (use a task with them, e.g. 8-class)"
            )
    return problems


def _scenarios(cfg: PipelineConfig, on: dict[str, bool]) -> list[str]:
    if not on["experiments"]:
        return []
    problems = []
    if cfg.experiments.executor == "ray" and importlib.util.find_spec("ray") is None:
        problems.append(
            'experiments.executor ray needs Ray: pip install "retinaug[ray]" (or set experiments.executor: local)'
        )
    for sc in cfg.experiments.resolve():
        if sc.synthetic > 0 and not on["label"]:
            off = [s for s in ("generator", "synthetic", "labeler") if not on[s]]
            problems.append(
                f"scenario {sc.name} needs labelled synthetic images: switch on {', '.join(off)} "
                f"({off[0]}.enabled: true) or drop the scenario"
            )
        if sc.traditional > 0:
            if not on["augment"]:
                problems.append(
                    f"scenario {sc.name} needs traditional augmentation rows: switch the augment stage on "
                    "(augment.enabled: true) or drop the scenario"
                )
            elif cfg.augment.ratio < sc.traditional:
                problems.append(
                    f"augment.ratio {cfg.augment.ratio:g} makes fewer rows than scenario {sc.name} asks for "
                    f"(x{sc.traditional:g}): raise it, or leave it unset (the largest multiplier)"
                )
            elif cfg.augment.classes and (
                absent := [c for c in sc.added_classes("traditional") if c not in cfg.augment.classes]
            ):
                problems.append(
                    f"scenario {sc.name} adds traditional rows of {', '.join(absent)}, which augment.classes "
                    f"({', '.join(cfg.augment.classes)}) does not make"
                )
        if sc.selection:
            if not on["selection"]:
                problems.append(
                    f"scenario {sc.name} needs the t-SNE selection: switch the selection stage on "
                    "(selection.enabled: true) or drop the scenario"
                )
            elif absent := [c for c in sc.selection_classes if c in sc.classes and c not in cfg.selection.classes]:
                problems.append(
                    f"scenario {sc.name} replaces {', '.join(absent)} by selected images, but selection.classes "
                    f"({', '.join(cfg.selection.classes)}) does not select them"
                )
    return problems


def _external(cfg: PipelineConfig, on: dict[str, bool]) -> list[str]:
    """data.external is a prepared dataset of real images every scenario can be scored on (read by the experiments)."""
    if not cfg.data.external or not on["experiments"]:
        return []
    from .experiments.external import external_problems, load_external

    try:
        labels = set(load_external(cfg.data.external)["label"])
    except RetinaugError as exc:
        return [str(exc)]
    return external_problems(labels, cfg.experiments.resolve())


def _extractors(cfg: PipelineConfig, on: dict[str, bool]) -> list[str]:
    problems = []
    for name in ("selection", "quality"):
        spec = getattr(cfg, name).extractor
        if not on[name]:
            continue
        if spec == "labeler" and not on["labeler"]:
            problems.append(
                f"{name}.extractor labeler needs the labeler stage (labeler.enabled: true); or use pixels or imagenet"
            )
        elif (backbone := imagenet_backbone(spec)) is not None:
            try:  # when not ready, raises saying what is missing; nothing is converted (a check writes nothing)
                imagenet_ready(backbone) or imagenet_weights_file(backbone)
            except RetinaugError as exc:
                problems.append(f"{name}: {exc}")
        elif spec not in EXTRACTORS and not Path(spec).is_dir():
            problems.append(
                f"{name}.extractor {spec!r} is neither auto, labeler, pixels, imagenet[:<timm backbone>] nor a model folder"
            )
    if on["quality"] and cfg.quality.accepted_only and not on["label"]:
        problems.append(
            "quality.accepted_only needs the label stage's verdicts: switch the labeler on, or audit every image"
        )
    return problems


def _classifier_weights(cfg: PipelineConfig, on: dict[str, bool]) -> list[str]:
    """`pretrained: imagenet` reads local sources only: a missing one is said now, not after the generator trained."""
    from .classify.weights import IMAGENET, imagenet_available, imagenet_file

    problems = []
    for stage in ("labeler", "experiments"):
        train = getattr(cfg, stage).train
        if on[stage] and str(train.pretrained) == IMAGENET and not imagenet_available(train.backbone):
            try:  # raises, saying what is missing; nothing is converted (a check writes nothing)
                imagenet_file(train.backbone)
            except RetinaugError as exc:
                problems.append(f"{stage}.train: {exc}")
    return problems


def _counts(
    cfg: PipelineConfig,
    on: dict[str, bool],
    data: pd.DataFrame,
    split_hint: str = "other split fractions (data.val, data.test)",
) -> list[str]:
    """Every class a stage trains on, selects from or is scored on has images in the splits it uses."""
    counts = pd.crosstab(data["label"], data["split"]).reindex(columns=["train", "val", "test"], fill_value=0)

    def n(split: str, code: str) -> int:
        return int(counts.at[code, split]) if code in counts.index else 0

    def lacking(split: str, codes) -> list[str]:
        return [c for c in codes if n(split, c) == 0]

    present = [c for c in TASKS["8-class"] if n("train", c)]
    size = f"{len(data)} images ({', '.join(f'{s} {int(counts[s].sum())}' for s in counts.columns)})"
    problems = []

    def need(what: str, split: str, codes) -> None:
        if missing := lacking(split, codes):
            problems.append(
                f"{what} needs {split} images of {', '.join(missing)}, and the data has none ({size}); "
                f"use more data (data.n), {split_hint} or drop the class"
            )

    if on["generator"]:
        learns = cfg.generator.method_config().train_classes
        need("the generator", "train", learns if isinstance(learns, list) else present)
    if on["synthetic"]:
        need("synthetic.ratio", "train", cfg.synthetic.classes or [])
    if on["labeler"]:
        task = resolve_task(cfg.labeler.train.task)
        need(f"the labeler (task {cfg.labeler.train.task})", "train", task)
        if not any(n("val", c) for c in task):
            need(f"the labeler (task {cfg.labeler.train.task})", "val", task)
    if on["selection"]:
        need("selection", "train", cfg.selection.classes)
    if on["augment"]:
        need("augment", "train", cfg.augment.classes or [c for c in TASKS["5-class"] if c in present])
    if on["experiments"]:
        for sc in cfg.experiments.resolve():
            need(f"scenario {sc.name}", "train", sc.classes)
            for split in ("val", "test"):
                if not any(n(split, c) for c in sc.classes):
                    need(f"scenario {sc.name}", split, sc.classes)
    return problems
