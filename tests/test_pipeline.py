"""Stage records: skip unchanged finished stages, resume interrupted ones, redo changed/forced/rewritten ones; and
the whole pipeline on a tiny config (every stage), re-run, partially invalidated, retrained and moved."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml
from pipeline_helpers import tiny_config, tiny_run

from retinaug.config import load_config
from retinaug.errors import RetinaugError
from retinaug.manifest import load_manifest
from retinaug.pipeline import STAGES as STAGE_TABLE
from retinaug.pipeline import parse_force, plan_pipeline, resolve, run_pipeline, steps
from retinaug.stage_order import stage_names
from retinaug.stages import Stage, read_record

STAGES = stage_names()


def _stage(folder: Path, calls: list, config: dict, inputs: dict, fail: type[BaseException] | None = None) -> Stage:
    def work():
        calls.append(sorted(p.name for p in folder.iterdir() if p.name not in ("stage.json", ".owned.json")))
        (folder / "partial.txt").write_text("x")
        if fail:
            raise fail("killed")
        (folder / "out.txt").write_text(json.dumps(config))

    return Stage("s", folder, config, inputs, work, ["out.txt"])


def test_stage_skip_resume_fresh_force(tmp_path):
    folder, calls = tmp_path / "s", []
    _stage(folder, calls, {"a": 1}, {"up": "h1"}).execute()
    assert read_record(folder)["status"] == "done" and len(calls) == 1
    rec = _stage(folder, calls, {"a": 1}, {"up": "h1"}).execute()
    assert len(calls) == 1 and rec["why"] == "never run"  # skipped: the old record is returned
    assert _stage(folder, calls, {"a": 1}, {"up": "h1"}).decision(False) == (
        "skip",
        "finished, config and inputs unchanged",
    )
    # config change: fresh start in an emptied folder
    _stage(folder, calls, {"a": 2}, {"up": "h1"}).execute()
    assert calls[-1] == [] and read_record(folder)["why"] == "config changed"
    # input change
    _stage(folder, calls, {"a": 2}, {"up": "h2"}).execute()
    assert read_record(folder)["why"] == "inputs changed (up)"
    # interrupted (failed mid-way): the next run resumes in place, keeping the partial work
    with pytest.raises(RuntimeError):
        _stage(folder, calls, {"a": 3}, {"up": "h2"}, fail=RuntimeError).execute()
    assert read_record(folder)["status"] == "failed"
    _stage(folder, calls, {"a": 3}, {"up": "h2"}).execute()
    assert calls[-1] == ["partial.txt"] and read_record(folder)["why"] == "its last attempt failed"
    with pytest.raises(KeyboardInterrupt):  # Ctrl-C: recorded as interrupted, not failed
        _stage(folder, calls, {"a": 3}, {"up": "h2"}, fail=KeyboardInterrupt).execute(force=True)
    assert read_record(folder)["status"] == "interrupted"
    assert _stage(folder, calls, {"a": 3}, {"up": "h2"}).decision(False) == (
        "resume",
        "its last attempt was interrupted",
    )
    # forced, and missing outputs
    _stage(folder, calls, {"a": 3}, {"up": "h2"}).execute(force=True)
    assert calls[-1] == [] and read_record(folder)["why"] == "forced"
    # an output rewritten after the stage finished (same size, mtime set back): redone
    out = folder / "out.txt"
    st = out.stat()
    out.write_text(out.read_text().replace("3", "4"))
    os.utime(out, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert out.stat().st_size == st.st_size and out.stat().st_mtime_ns == st.st_mtime_ns
    assert _stage(folder, calls, {"a": 3}, {"up": "h2"}).decision(False) == (
        "fresh",
        "outputs changed since it finished (a file was rewritten)",
    )
    out.unlink()
    assert _stage(folder, calls, {"a": 3}, {"up": "h2"}).decision(False) == ("fresh", "outputs missing (s/out.txt)")


def test_parse_force():
    assert parse_force(["data,augment", "report"]) == {"data", "augment", "report"}
    assert parse_force(["all"]) == set(STAGES)
    with pytest.raises(RetinaugError, match="unknown stage"):
        parse_force(["generate"])


def test_stage_names_are_the_tables():
    """stage_order.py spells the stage names apart from the table (the report reads them without the pipeline): the
    same names, in the same order."""
    assert stage_names() == tuple(spec.name for spec in STAGE_TABLE)


def _started(run: Path) -> dict[str, str]:
    return {s: read_record(run / s).get("started") for s in STAGES}


def test_pipeline_full_rerun_and_invalidation():
    run = tiny_run()
    # every stage ran and wrote its contract files
    for name in STAGES:
        assert read_record(run / name)["status"] == "done", name
    for rel in (
        "config.yaml",
        "run.log",
        "logs/experiments.log",
        "data/manifest.parquet",
        "generator/history.json",
        "synthetic/manifest.parquet",
        "labeler/model.safetensors",
        "label/manifest.parquet",
        "selection/manifest.parquet",
        "augment/manifest.parquet",
        "experiments/summary.csv",
        "experiments/table.md",
        "experiments/composition.csv",
        "quality/audit.json",
        "report/index.html",
    ):
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
    # one logging channel: the per-stage logs hold the classifiers' epochs and the generator's progress
    logs = {name: (run / "logs" / f"{name}.log").read_text() for name in ("generator", "labeler", "experiments")}
    assert (
        "training ddpm diffusion: 4/4 (100%)" in logs["generator"]
        and "trained ddpm on 48 TRAIN images" in logs["generator"]
    )
    assert "epoch   1  loss" in logs["labeler"] and "epoch   1  loss" in logs["experiments"]
    assert logs["experiments"].count("epoch   1  loss") == 4  # one model per scenario (1 seed)

    # unchanged re-run: everything but the report is skipped
    before = _started(run)
    run_pipeline(tiny_config(), run)
    after = _started(run)
    assert {s for s in STAGES if before[s] != after[s]} <= {"report"}

    # forced augment gives identical rows, so its content hash (and everything downstream) is unchanged
    metrics = {
        sc: (run / "experiments" / sc / "seed0" / "metrics.json").stat().st_mtime_ns for sc in ("real", "trad", "sel")
    }
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
    """`retinaug run` killed with SIGKILL while the synthetic stage writes images (right after its 4th PNG:
    RETINAUG_FAULT=kill@image:4), then re-run: the same synthetic pixels and the same final metrics as an
    uninterrupted run with the same settings. The kill ends a batch of 4, so the re-run samples the same batches as
    the uninterrupted run (across batch sizes CPU kernels may round differently: pixels could differ by one grey
    level). Stages the assertions do not read are off, and the three runs go one after another."""
    import copy
    import subprocess

    from conftest import kill9_at
    from pipeline_helpers import TINY, cli, cli_env

    raw = copy.deepcopy(TINY)
    raw["synthetic"]["batch_size"] = 4
    raw["experiments"]["scenarios"] = [sc for sc in raw["experiments"]["scenarios"] if sc["name"] in ("real", "syn")]
    for section in ("selection", "augment", "quality"):
        raw.setdefault(section, {})["enabled"] = False
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    run, reference = tmp_path / "run", tmp_path / "reference"  # not the shared tiny_run(): others re-run it changed
    args, env = ["run", str(cfg), "--out"], cli_env()

    def run_to_the_end(out: Path) -> None:
        res = subprocess.run(cli(*args, str(out)), env=env, capture_output=True, text=True)
        assert res.returncode == 0, res.stderr[-3000:]  # why it failed (was: discarded, only 'exit status 1')

    run_to_the_end(reference)  # in a process of its own too: earlier tests may have changed this one's torch state
    kill9_at([*args, str(run)], "kill@image:4", env=env)
    assert read_record(run / "synthetic")["status"] == "running" and len(list(run.glob("synthetic/*/[!.]*.png"))) == 4
    run_to_the_end(run)
    assert (
        read_record(run / "synthetic")["status"] == "done"
        and read_record(run / "synthetic")["why"] == "its last attempt stopped mid-way (the process ended)"
    )
    ours = sorted(run.glob("synthetic/*/*.png"))
    theirs = sorted(reference.glob("synthetic/*/*.png"))
    assert [p.relative_to(run) for p in ours] == [p.relative_to(reference) for p in theirs] and len(ours) == 20
    assert all(a.read_bytes() == b.read_bytes() for a, b in zip(ours, theirs))
    pd.testing.assert_frame_equal(
        pd.read_csv(run / "experiments" / "summary.csv"), pd.read_csv(reference / "experiments" / "summary.csv")
    )


def test_experiments_keep_image_digests_apart_from_their_output_digests():
    """The runner caches the digests of the images its fits read, the stage those of its outputs, in two files:
    sharing one, each save kept only its own entries, so every re-run of the experiments re-hashed every image."""
    run = tiny_run()
    inputs = json.loads((run / "experiments" / ".input-digests.json").read_text())
    outputs = json.loads((run / "experiments" / ".digests.json").read_text())
    real = load_manifest(run / "data")
    read = set(real.loc[real["split"].isin(["train", "test"]), "path"].map(os.path.abspath))
    metrics = {os.path.abspath(p) for p in (run / "experiments").glob("*/seed*/metrics.json")}
    assert len(metrics) == 4 and metrics <= set(outputs) and not read & set(outputs)
    assert read & set(inputs) and not metrics & set(inputs)


def test_moved_run_folder_is_skipped_whole(tmp_path):
    """Output hashes name files relative to the run and seed keys hash image content: a copied run (new paths,
    new file times and inodes) re-hashes its files once, then skips every stage and retrains nothing."""
    moved = tmp_path / "moved"
    shutil.copytree(tiny_run(), moved, copy_function=shutil.copy)  # new file times, as `cp -r` gives
    seeds = sorted(moved.glob("experiments/*/seed*/metrics.json"))
    assert len(seeds) == 4
    before = {p: p.stat().st_mtime_ns for p in seeds}
    # manifests find the copy's own images, not the original's
    for stage in ("augment", "selection", "synthetic", "label"):
        assert load_manifest(moved / stage)["path"].str.startswith(str(moved) + "/").all(), stage
    cfg = load_config(moved / "config.yaml")  # as the run was last made
    assert {name: action for name, action, _ in plan_pipeline(cfg, moved)} == {
        **{s: "skip" for s in STAGES},
        "report": "run",
    }
    run_pipeline(cfg, moved, force=["experiments"])
    assert read_record(moved / "experiments")["why"] == "forced"
    assert {p: p.stat().st_mtime_ns for p in seeds} == before
    recipe = json.loads((moved / "experiments" / "real" / "seed0" / "recipe.json").read_text())
    assert (
        recipe["key"] == json.loads((tiny_run() / "experiments" / "real" / "seed0" / "recipe.json").read_text())["key"]
    )


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
    res = CliRunner().invoke(
        app, ["run", str(run / "config.yaml"), "--out", str(run), "--dry-run", "--set", "selection.keep=0.3"]
    )
    plan = {line.split()[0]: line.split(maxsplit=2)[1:] for line in res.output.splitlines()}
    assert plan["selection"] == ["run", "config changed"]
    assert plan["experiments"] == [
        "run?",
        "finished; redone if the output of selection changes; seeds whose recipe is unchanged are kept",
    ]
    assert plan["quality"][0] == plan["augment"][0] == "skip"
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*")} == files


def test_switched_off_stage_outputs_are_not_read(tmp_path):
    """selection.enabled=false on a run whose selection/ folder exists: the experiments see no selection; the
    7-class selection scenario that needs it stops the dry-run and the run before any stage, naming the switch."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run(), run)
    started = _started(run)
    cfg = tiny_config("selection.enabled=false")
    for attempt in (plan_pipeline, run_pipeline):
        with pytest.raises(
            RetinaugError, match=r"scenario sel needs the t-SNE selection: switch the selection stage on"
        ):
            attempt(cfg, run)
    assert _started(run) == started
    cfg = tiny_config("selection.enabled=false", "experiments.only=[real, syn, trad]")
    plan = {name: (action, why) for name, action, why in plan_pipeline(cfg, run)}
    assert plan["selection"] == ("disabled", "disabled in the config")
    assert plan["experiments"] == ("run", "config changed; seeds whose recipe is unchanged are kept")


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
    assert len(load_manifest(run / "synthetic")) == 30
    labelled = load_manifest(run / "label")
    assert len(labelled) == 30 and labelled["accepted"].all()  # relabelled: the label stage ran again on all 30


def _section_html(run: Path, key: str) -> str:
    import re

    return re.search(
        rf'<section id="{key}" class="\w+">(.*?)</section>', (run / "report" / "index.html").read_text(), re.S
    ).group(1)


def test_retrained_generator_reruns_everything_below_it(tmp_path):
    """The generator retrains with another step count: the synthetic images are regenerated under the same file
    names, so only content hashes can tell. Label, experiments (the seeds that use synthetic images), quality and
    the report re-run and the report's numbers change; the dry-run says so first; the real-only seed is kept."""
    from typer.testing import CliRunner

    from retinaug.cli import app

    run = tmp_path / "run"
    shutil.copytree(tiny_run(), run)
    names = sorted(p.relative_to(run) for p in run.glob("synthetic/*/*.png"))
    pixels = {p: (run / p).read_bytes() for p in names}
    fid_before, labeled_before = _section_html(run, "fid"), load_manifest(run / "label")["pred_conf"].tolist()
    metrics = {
        sc: (run / "experiments" / sc / "seed0" / "metrics.json").read_text() for sc in ("real", "syn", "trad", "sel")
    }
    cfg = load_config(
        run / "config.yaml", overrides=["generator.ddpm.steps=6"]
    )  # as the run was last made, + the change
    started = _started(run)

    res = CliRunner().invoke(
        app, ["run", str(run / "config.yaml"), "--out", str(run), "--dry-run", "--set", "generator.ddpm.steps=6"]
    )
    assert res.exit_code == 0, res.output
    plan = {
        line.split()[0]: line.split(maxsplit=2)[1:] for line in res.output.splitlines() if line.split()[0] in STAGES
    }
    assert plan["generator"] == ["run", "config changed"]
    assert plan["synthetic"] == ["run?", "finished; redone if the output of generator changes"]
    assert plan["label"] == ["run?", "finished; redone if the output of synthetic changes"]
    assert plan["experiments"][0] == plan["quality"][0] == "run?" and "label" in plan["experiments"][1]
    assert plan["labeler"][0] == plan["selection"][0] == plan["augment"][0] == "skip"

    run_pipeline(cfg, run)
    why = {s: read_record(run / s)["why"] for s in STAGES}
    assert why["generator"] == "config changed" and why["synthetic"] == "inputs changed (generator)"
    assert why["label"] == "inputs changed (synthetic)" and why["experiments"] == "inputs changed (label)"
    assert why["quality"] == "inputs changed (label, synthetic)"
    assert {s for s in STAGES if _started(run)[s] == started[s]} == {"data", "labeler", "selection", "augment"}
    assert sorted(p.relative_to(run) for p in run.glob("synthetic/*/*.png")) == names  # same names ...
    assert any((run / p).read_bytes() != pixels[p] for p in names)  # ... other pixels
    assert load_manifest(run / "label")["pred_conf"].tolist() != labeled_before
    now = {sc: (run / "experiments" / sc / "seed0" / "metrics.json").read_text() for sc in metrics}
    assert now["real"] == metrics["real"] and now["trad"] == metrics["trad"]  # no synthetic image: kept
    assert (
        json.loads((run / "experiments" / "syn" / "seed0" / "recipe.json").read_text())["train_rows"]
        != json.loads((tiny_run() / "experiments" / "syn" / "seed0" / "recipe.json").read_text())["train_rows"]
    )
    assert _section_html(run, "fid") != fid_before  # the report shows the new images' FID/KID


def test_rewritten_output_file_is_detected(tmp_path):
    """An image of a finished stage rewritten in place (same size, mtime set back): the dry-run redoes the stage that
    wrote it and the label stage, whose output names the image; the stages below wait for their outputs."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run(), run)
    image = sorted(run.glob("synthetic/G/*.png"))[0]
    st = image.stat()
    data = bytearray(image.read_bytes())
    data[-20] ^= 0xFF  # a byte inside the last chunk: same size, other content
    with open(image, "r+b") as f:
        f.write(data)
    os.utime(image, ns=(st.st_atime_ns, st.st_mtime_ns))
    plan = {name: (action, why) for name, action, why in plan_pipeline(load_config(run / "config.yaml"), run)}
    assert plan["synthetic"] == plan["label"] == ("run", "outputs changed since it finished (a file was rewritten)")
    assert plan["experiments"][0] == plan["quality"][0] == "run?"
    assert plan["selection"][0] == plan["augment"][0] == "skip"


def test_synthetic_stage_in_two_processes_makes_the_same_images(tmp_path):
    """synthetic.processes 2 (as with two GPUs): the stage samples in two torchrun processes while `retinaug run`
    keeps the run lock, relays their lines into the stage log, and writes the images one process writes; the
    process count is not part of the stage's config (changing it redoes nothing)."""
    import numpy as np
    from PIL import Image

    run = tmp_path / "run"
    shutil.copytree(tiny_run(), run)
    cfg = load_config(run / "config.yaml")
    reference = {p.relative_to(run): np.asarray(Image.open(p)) for p in (run / "synthetic").glob("*/*.png")}
    two = cfg.model_copy(deep=True)
    two.synthetic.processes = 2
    assert dict((n, a) for n, a, _ in plan_pipeline(two, run))["synthetic"] == "skip"
    run_pipeline(two, run, force=["synthetic"])
    assert read_record(run / "synthetic")["status"] == "done"
    log = (run / "logs" / "synthetic.log").read_text()
    assert "sampling in 2 processes" in log
    assert "[process 1] process 1/2: 10 of 20 images" in log and "[process 2] process 2/2: 10 of 20 images" in log
    made = {p.relative_to(run): np.asarray(Image.open(p)) for p in (run / "synthetic").glob("*/*.png")}
    assert made.keys() == reference.keys() and len(made) == 20
    for name, pixels in reference.items():
        np.testing.assert_array_equal(made[name], pixels)
    assert len(load_manifest(run / "synthetic")) == 20 and not (run / "synthetic" / ".launch.json").exists()


def test_synthetic_processes_auto_is_one_per_visible_gpu(monkeypatch):
    import torch

    from retinaug.generate.launch import process_count

    run = tiny_run()  # built before the GPUs are faked
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    assert process_count("auto") == 1
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert process_count("auto") == 4 and process_count(1) == 1
    with pytest.raises(RetinaugError, match="synthetic.processes 5 is more than the 4 visible GPU"):
        process_count(5)
    with pytest.raises(
        RetinaugError, match=r"cannot run \(nothing was started\):\n  - synthetic: synthetic.processes 5 is more"
    ):
        plan_pipeline(tiny_config("synthetic.processes=5"), run)  # refused before any stage starts
    with pytest.raises(Exception, match="processes must be auto or at least 1"):
        tiny_config("synthetic.processes=0")


# Each stage's config hash as stored in stage.json by the code before the verbs took their configs whole (359200e):
# a change of how a config reaches its stage must not make a finished run redo its stages.
FIXED_RECIPES = ["labeler.train.recipe=scratch", "experiments.train.recipe=scratch"]  # not what this machine has
STORED_HASHES = {
    "demo": (
        FIXED_RECIPES,
        {"generator": "ad869d54ad9dd2d3", "synthetic": "c2b71a537ea723ae", "labeler": "65cb51b0011f4688",
         "label": "450403a63667b2b3", "selection": "38332f887edc3cad", "augment": "dc24a860d963e5df",
         "experiments": "c958f8e476929e55", "quality": "4b8a5dc248ad9edd", "report": "44136fa355b3678a"},
    ),
    "paper": (
        [*FIXED_RECIPES, "generator.method=ldm", "label.policy=relabel", "augment.ratio=2"],
        {"generator": "6235fea23cc98c6a", "synthetic": "7f2308c2e6aea372", "labeler": "f5d782f22346a92d",
         "label": "0a7aadbd06571224", "selection": "38332f887edc3cad", "augment": "d3f364968cb2a6b4",
         "experiments": "2ba54324654a8427", "quality": "90be66f932ace38f", "report": "44136fa355b3678a"},
    ),
}  # fmt: skip


@pytest.mark.parametrize("preset", sorted(STORED_HASHES))
def test_stage_config_hashes_are_the_stored_ones(preset: str, tmp_path: Path):
    from retinaug.stages import config_hash

    sets, stored = STORED_HASHES[preset]
    sets = [*sets, f"data.path={tmp_path}"] if preset == "paper" else sets
    cfg = resolve(load_config(preset=preset, overrides=sets))
    hashes = {st.label: config_hash(st.make().config) for st in steps(cfg, tmp_path / "run") if st.on}
    hashes.pop("data")  # the dataset path's hash depends on where the test runs
    assert hashes == stored


def test_every_stage_names_a_verb_that_takes_what_the_table_passes(tmp_path: Path):
    """The table calls verb(*needs, section, out, **uses, **borrows): each verb's signature must accept exactly that,
    with the section passed whole (its config class)."""
    import inspect

    cfg = resolve(load_config(preset="demo", overrides=["data.external=" + str(tmp_path)]))
    for spec in STAGE_TABLE:
        verb = spec.load_verb()
        section = getattr(cfg, spec.section) if spec.section else None
        borrowed = spec.borrows(cfg) if spec.borrows else {}
        needs = [tmp_path / up for up in spec.needs]
        uses = {keyword: tmp_path / up for up, keyword in spec.uses.items()}
        inspect.signature(verb).bind(*needs, section, tmp_path / spec.name, **uses, **borrowed)  # TypeError if not
        assert callable(verb) and verb.__name__ == spec.verb.partition(":")[2]
    verbs = {spec.name: spec.verb for spec in STAGE_TABLE}
    assert (
        verbs["label"] == "retinaug.classify:label" and verbs["experiments"] == "retinaug.experiments:run_experiments"
    )
    assert verbs["selection"] == "retinaug.select:select" and verbs["augment"] == "retinaug.augment:augment"
