"""Stage records: skip unchanged finished stages, resume interrupted ones, redo changed/forced ones; and the
whole pipeline on a tiny config (every stage), re-run and partially invalidated."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml
from pipeline_helpers import tiny_config, tiny_run

from retinaug.config import load_config
from retinaug.errors import RetinaugError
from retinaug.manifest import load_manifest
from retinaug.pipeline import STAGES, parse_force, plan_pipeline, run_pipeline
from retinaug.stages import Stage, read_record


def _stage(folder: Path, calls: list, config: dict, inputs: dict, fail: bool = False) -> Stage:
    def work():
        calls.append(sorted(p.name for p in folder.iterdir() if p.name != "stage.json"))
        (folder / "partial.txt").write_text("x")
        if fail:
            raise RuntimeError("killed")
        (folder / "out.txt").write_text(json.dumps(config))

    return Stage("s", folder, config, inputs, work, [folder / "out.txt"])


def test_stage_skip_resume_fresh_force(tmp_path):
    folder, calls = tmp_path / "s", []
    _stage(folder, calls, {"a": 1}, {"up": "h1"}).execute()
    assert read_record(folder)["status"] == "done" and len(calls) == 1
    rec = _stage(folder, calls, {"a": 1}, {"up": "h1"}).execute()
    assert len(calls) == 1 and rec["why"] == "never run"  # skipped: the old record is returned
    assert _stage(folder, calls, {"a": 1}, {"up": "h1"}).decision(False) == ("skip", "finished, config and inputs unchanged")
    # config change: fresh start in an emptied folder
    _stage(folder, calls, {"a": 2}, {"up": "h1"}).execute()
    assert calls[-1] == [] and read_record(folder)["why"] == "config changed"
    # input change
    _stage(folder, calls, {"a": 2}, {"up": "h2"}).execute()
    assert read_record(folder)["why"] == "inputs changed (up)"
    # interrupted (failed mid-way): the next run resumes in place, keeping the partial work
    with pytest.raises(RuntimeError):
        _stage(folder, calls, {"a": 3}, {"up": "h2"}, fail=True).execute()
    assert read_record(folder)["status"] == "failed"
    _stage(folder, calls, {"a": 3}, {"up": "h2"}).execute()
    assert calls[-1] == ["partial.txt"] and read_record(folder)["why"].startswith("interrupted")
    # forced, and missing outputs
    _stage(folder, calls, {"a": 3}, {"up": "h2"}).execute(force=True)
    assert calls[-1] == [] and read_record(folder)["why"] == "forced"
    (folder / "out.txt").unlink()
    assert _stage(folder, calls, {"a": 3}, {"up": "h2"}).decision(False)[0] == "fresh"


def test_parse_force():
    assert parse_force(["data,augment", "report"]) == {"data", "augment", "report"}
    assert parse_force(["all"]) == set(STAGES)
    with pytest.raises(RetinaugError, match="unknown stage"):
        parse_force(["generate"])


def _started(run: Path) -> dict[str, str]:
    return {s: read_record(run / s).get("started") for s in STAGES}


def test_pipeline_full_rerun_and_invalidation():
    run = tiny_run()
    # every stage ran and wrote its contract files
    for name in STAGES:
        assert read_record(run / name)["status"] == "done", name
    for rel in ("config.yaml", "run.log", "logs/experiments.log", "data/manifest.parquet", "generator/history.json",
                "synthetic/manifest.parquet", "labeler/model.safetensors", "selection/manifest.parquet",
                "augment/manifest.parquet", "experiments/summary.csv", "experiments/table.md",
                "experiments/composition.csv", "quality/audit.json", "report/index.html"):
        assert (run / rel).is_file(), rel
    resolved = yaml.safe_load((run / "config.yaml").read_text())
    assert resolved["experiments"]["train"]["label_smoothing"] == 0.1  # defaults written out
    assert resolved["synthetic"]["classes"] == ["G", "C", "A", "H", "M"]
    comp = pd.read_csv(run / "experiments" / "composition.csv").set_index(["scenario", "class"])
    assert comp.loc[("syn", "G"), "synthetic"] == 3 and comp.loc[("syn", "G"), "real"] == 6  # 0.5 x 6 real
    assert comp.loc[("sel", "N"), "selected"] == 3 and comp.loc[("sel", "N"), "synthetic"] == 0
    for sc in ("real", "syn", "trad", "sel"):
        preds = pd.read_parquet(run / "experiments" / sc / "seed0" / "predictions.parquet")
        assert preds["path"].str.contains("/data/images/").all()  # test rows are real images only

    # unchanged re-run: everything but the report is skipped
    before = _started(run)
    run_pipeline(tiny_config(), run)
    after = _started(run)
    assert {s for s in STAGES if before[s] != after[s]} <= {"report"}

    # forced augment gives identical rows, so its content hash (and everything downstream) is unchanged
    metrics = {sc: (run / "experiments" / sc / "seed0" / "metrics.json").stat().st_mtime_ns for sc in ("real", "trad", "sel")}
    run_pipeline(tiny_config(), run, force=["augment"])
    assert read_record(run / "augment")["why"] == "forced"
    assert read_record(run / "experiments")["started"] == after["experiments"]

    # a selection change re-runs selection and experiments, where only the scenario using it retrains
    run_pipeline(tiny_config("selection.keep=0.34"), run)
    assert read_record(run / "selection")["why"] == "config changed"
    assert read_record(run / "experiments")["why"] == "inputs changed (selection)"
    now = {sc: (run / "experiments" / sc / "seed0" / "metrics.json").stat().st_mtime_ns for sc in metrics}
    assert now["real"] == metrics["real"] and now["trad"] == metrics["trad"] and now["sel"] != metrics["sel"]
    comp = pd.read_csv(run / "experiments" / "composition.csv").set_index(["scenario", "class"])
    assert comp.loc[("sel", "N"), "selected"] == 2


def test_pipeline_kill9_during_generate_then_rerun_same_results(tmp_path):
    """`retinaug run` killed with SIGKILL while the synthetic stage writes images, then re-run: the same synthetic
    pixels and the same final metrics as an uninterrupted run (which samples in batches of 32, this one in 1s)."""
    import copy
    import os
    import signal
    import subprocess
    import sys
    import time

    from pipeline_helpers import TINY

    reference = tmp_path / "reference"  # not the shared tiny_run(): other tests re-run it with other settings
    run_pipeline(tiny_config(), reference)
    raw = copy.deepcopy(TINY)
    raw["synthetic"]["batch_size"] = 1  # many small batches: a window to kill in; output must not depend on it
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    run = tmp_path / "run"
    cmd = [sys.executable, "-c", "from retinaug.cli import main; main()", "run", str(cfg), "--out", str(run)]
    env = {**os.environ, "RETINAUG_QUIET": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not list(run.glob("synthetic/*/*.png")) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    written = len(list(run.glob("synthetic/*/*.png")))
    assert read_record(run / "synthetic")["status"] == "running" and 0 < written < 20
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert read_record(run / "synthetic")["status"] == "done"
    ours = sorted(run.glob("synthetic/*/*.png"))
    theirs = sorted(reference.glob("synthetic/*/*.png"))
    assert [p.relative_to(run) for p in ours] == [p.relative_to(reference) for p in theirs] and len(ours) == 20
    assert all(a.read_bytes() == b.read_bytes() for a, b in zip(ours, theirs))
    pd.testing.assert_frame_equal(
        pd.read_csv(run / "experiments" / "summary.csv"), pd.read_csv(reference / "experiments" / "summary.csv")
    )


def test_moved_run_folder_keeps_finished_seeds(tmp_path):
    """Seed keys name images relative to the run folder: a copied run re-running its experiments retrains nothing."""
    moved = tmp_path / "moved"
    shutil.copytree(tiny_run(), moved, copy_function=shutil.copy)  # new file times, as `cp -r` gives
    seeds = sorted(moved.glob("experiments/*/seed*/metrics.json"))
    assert len(seeds) == 4
    before = {p: p.stat().st_mtime_ns for p in seeds}
    for stage in ("augment", "selection", "synthetic"):  # manifests find the copy's own images, not the original's
        assert load_manifest(moved / stage)["path"].str.startswith(str(moved) + "/").all(), stage
    run_pipeline(load_config(moved / "config.yaml"), moved, force=["experiments"])  # as the run was last made
    assert read_record(moved / "experiments")["why"] == "forced"
    assert {p: p.stat().st_mtime_ns for p in seeds} == before
    recipe = json.loads((moved / "experiments" / "real" / "seed0" / "recipe.json").read_text())
    assert recipe["key"] == json.loads((tiny_run() / "experiments" / "real" / "seed0" / "recipe.json").read_text())["key"]


def test_dry_run_says_what_would_run_writes_nothing_and_ignores_tracker(tmp_path):
    """`retinaug run --dry-run` on a finished run: a selection change plans selection and (conditionally) the
    experiments; turning TensorBoard on everywhere plans nothing (tracking does not change results)."""
    from typer.testing import CliRunner

    from retinaug.cli import app

    run = tmp_path / "run"
    shutil.copytree(tiny_run(), run)
    files = {p: p.stat().st_mtime_ns for p in run.rglob("*")}
    trackers = [f"--set={k}.tracker=tensorboard" for k in ("generator.ddpm", "labeler.train", "experiments.train")]
    res = CliRunner().invoke(app, ["run", str(run / "config.yaml"), "--out", str(run), "--dry-run", *trackers])
    assert res.exit_code == 0, res.output
    plan = {line.split()[0]: line.split()[1] for line in res.output.splitlines()}
    assert plan == {**{s: "skip" for s in STAGES}, "report": "run"}
    res = CliRunner().invoke(app, ["run", str(run / "config.yaml"), "--out", str(run), "--dry-run", "--set", "selection.keep=0.3"])
    plan = {line.split()[0]: line.split(maxsplit=2)[1:] for line in res.output.splitlines()}
    assert plan["selection"] == ["run", "config changed"]
    assert plan["experiments"] == ["run?", "finished; redone if the output of selection changes; seeds whose recipe is unchanged are kept"]
    assert plan["quality"][0] == plan["augment"][0] == "skip"
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*")} == files


def test_seed_keys_of_older_runs_are_accepted_and_upgraded(tmp_path):
    """Runs made before portable seed keys hashed absolute image paths: their finished seeds are still skipped,
    and their recipe.json gets the portable key."""
    from retinaug.experiment import accepted_synthetic, compose
    from retinaug.io import sha256_text

    run = tmp_path / "run"
    shutil.copytree(tiny_run(), run)
    cfg = load_config(run / "config.yaml")
    data, syn = load_manifest(run / "data"), accepted_synthetic(load_manifest(run / "synthetic"))
    sc = next(s for s in cfg.experiments.resolve() if s.name == "syn")
    train, _, test, _ = compose(sc, 0, data, syn)
    recipe_file = run / "experiments" / "syn" / "seed0" / "recipe.json"
    portable = json.loads(recipe_file.read_text())
    old = {k: v for k, v in portable.items() if k not in ("key", "counts")}
    old["train_rows"] = sha256_text("\n".join(sorted(train["path"] + "|" + "")))  # the old formula, absolute paths
    old["test_rows"] = sha256_text("\n".join(sorted(test["path"])))
    recipe_file.write_text(json.dumps({"key": sha256_text(json.dumps(old, sort_keys=True)), **old}))
    metrics = run / "experiments" / "syn" / "seed0" / "metrics.json"
    before = metrics.stat().st_mtime_ns
    run_pipeline(cfg, run, force=["experiments"])
    assert metrics.stat().st_mtime_ns == before
    assert json.loads(recipe_file.read_text())["key"] == portable["key"]


def test_switched_off_stage_outputs_are_not_read(tmp_path):
    """selection.enabled=false on a run whose selection/ folder exists: the experiments see no selection (the
    7-class selection scenario stops with a clear error) instead of silently reusing the old one."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run(), run)
    cfg = tiny_config("selection.enabled=false")
    plan = {name: (action, why) for name, action, why in plan_pipeline(cfg, run)}
    assert plan["selection"] == ("disabled", "disabled in the config")
    assert plan["experiments"] == ("run", "inputs changed (selection); seeds whose recipe is unchanged are kept")
    with pytest.raises(RetinaugError, match=r"scenario sel needs the t-SNE selection: switch the selection stage on"):
        run_pipeline(cfg, run)


def test_more_synthetic_images_keep_the_ones_already_made(tmp_path):
    """Raising synthetic.per_class reruns the synthetic stage in place: the images already written are kept
    (same per-image seeds) and only the new ones are sampled; a sampling change still starts from an empty folder."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run(), run)
    cfg = load_config(run / "config.yaml")
    old = {p: p.stat().st_mtime_ns for p in (run / "synthetic").glob("*/*.png")}
    assert len(old) == 20  # 4 per class, G C A H M
    more = cfg.model_copy(deep=True)
    more.synthetic.per_class = 6
    sampling = cfg.model_copy(deep=True)
    sampling.synthetic.guidance = 1.5
    plan = {name: (action, why) for name, action, why in plan_pipeline(sampling, run)}
    assert plan["synthetic"] == ("run", "config changed")
    assert dict((n, a) for n, a, _ in plan_pipeline(more, run))["synthetic"] == "resume"
    run_pipeline(more, run)
    assert read_record(run / "synthetic")["why"] == "config changed in amounts only: finished work kept"
    assert {p: p.stat().st_mtime_ns for p in old} == old
    assert len(list((run / "synthetic").glob("*/*.png"))) == 30
    syn = load_manifest(run / "synthetic")
    assert len(syn) == 30 and syn["accepted"].all()  # relabelled: the label stage ran again on all 30
