"""A run folder knows what it owns: retinaug deletes or replaces only files it wrote (ownership.py), never a dataset
inside --out, never a user's file in a stage folder; a run reached through a link is the same run; the data stage
notices edits to the dataset it read; a damaged result is redone or named, never dropped (issue 26 rows 1-3, 5, 7)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from pipeline_helpers import cli, cli_env, tiny_config, tiny_run
from test_faults import says
from test_ingest import kaggle_dataset, write_image
from typer.testing import CliRunner

from retinaug.cli import app
from retinaug.config import PipelineConfig
from retinaug.errors import RetinaugError
from retinaug.manifest import load_manifest
from retinaug.ownership import INVENTORY, check_foreign, clean, foreign
from retinaug.pipeline import plan_pipeline, run_pipeline

OFF = {s: {"enabled": False} for s in ("generator", "labeler", "selection", "augment", "experiments", "quality")}


def data_only(data: dict) -> dict:
    """A pipeline config that runs the data stage (and the report) only: seconds."""
    return {"name": "own", "data": data, **OFF}


def folder_dataset(root: Path, patients: int = 6) -> Path:
    """Class folders G/ and C/ of <patient>_<eye>.png images, 64 px."""
    for code, offset in (("G", 0), ("C", 100)):
        for i in range(patients):
            for k, eye in enumerate(("left", "right")):
                write_image(root / code / f"{offset + i}_{eye}.png", seed=offset + 2 * i + k, size=64)
    return root


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(cli(*args), env=cli_env(), capture_output=True, text=True, cwd=cwd)


def write_config(path: Path, raw: dict) -> Path:
    path.write_text(yaml.safe_dump(raw))
    return path


# ---------------------------------------------------------------- row 1: a dataset inside --out


@pytest.mark.parametrize("dry_run", [False, True])
def test_dataset_inside_out_is_refused_and_untouched(tmp_path, dry_run):
    proj = tmp_path / "proj"
    folder_dataset(proj / "data")
    before = snapshot(proj)
    cfg = write_config(tmp_path / "f.yaml", data_only({"source": "folder", "path": str(proj / "data"), "min_size": 16}))
    res = run_cli("run", str(cfg), "--out", str(proj), *(["--dry-run"] if dry_run else []))
    assert res.returncode == 1, res.stderr
    assert (
        says(res.stderr, f"the dataset {proj / 'data'} lies inside the run folder {proj}")
        and "Traceback" not in res.stderr
    )
    assert snapshot(proj) == before  # (was: every image of proj/data deleted)


def test_run_folder_inside_the_dataset_is_refused(tmp_path):
    data = folder_dataset(tmp_path / "ds")
    cfg = write_config(tmp_path / "f.yaml", data_only({"source": "folder", "path": str(data), "min_size": 16}))
    res = run_cli("run", str(cfg), "--out", str(data / "runs" / "a"))
    assert res.returncode == 1 and says(res.stderr, "lies inside the dataset")
    assert not (data / "runs").exists()


# ---------------------------------------------------------------- row 2: an existing folder that is not a run


def user_folder(x: Path) -> dict[str, bytes]:
    (x / "data").mkdir(parents=True)
    (x / "generator").mkdir()
    (x / "data" / "notes.txt").write_text("keep me")
    (x / "generator" / "model.safetensors").write_bytes(b"\x00weights of my own")
    return snapshot(x)


@pytest.mark.parametrize("dry_run", [False, True])
def test_existing_folder_with_stage_named_folders_is_refused(tmp_path, dry_run):
    x = tmp_path / "x"
    before = user_folder(x)
    res = run_cli("run", "--preset", "demo", "--out", str(x), *(["--dry-run"] if dry_run else []))
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert says(
        res.stderr, f"--out {x} holds 2 file(s) retinaug did not write (data/notes.txt, generator/model.safetensors)"
    )
    assert snapshot(x) == before and sorted(p.name for p in x.iterdir()) == [
        "data",
        "generator",
    ]  # no config.yaml, no lock
    # --adopt lets a folder hold other files, never a stage folder
    res = run_cli("run", "--preset", "demo", "--out", str(x), "--adopt", *(["--dry-run"] if dry_run else []))
    assert res.returncode == 1 and says(
        res.stderr, f"stage folder {x / 'data'} holds 1 file(s) retinaug did not write (notes.txt)"
    )
    assert snapshot(x) == before


def test_empty_out_names_the_current_folder(tmp_path):
    (tmp_path / "my-notes.md").write_text("mine")
    res = run_cli("run", "--preset", "demo", "--out", "", cwd=tmp_path)
    assert res.returncode == 1
    assert says(
        res.stderr,
        "--out (the current folder: was --out empty?) . holds 1 file(s) retinaug did not write (my-notes.md)",
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["my-notes.md"]


def test_adopted_folder_keeps_its_other_files(tmp_path):
    x = tmp_path / "x"
    (x / "src").mkdir(parents=True)
    (x / "notes.md").write_text("mine")
    (x / "src" / "a.py").write_text("print(1)")
    cfg = PipelineConfig.model_validate(data_only(tiny_config().data.model_dump()))
    with pytest.raises(RetinaugError, match="retinaug did not write"):
        run_pipeline(cfg, x)
    run_pipeline(cfg, x, adopt=True)
    assert (x / "notes.md").read_text() == "mine" and (x / "src" / "a.py").read_text() == "print(1)"
    assert json.loads((x / INVENTORY).read_text())["adopted"] is True
    assert "notes.md" not in json.loads((x / INVENTORY).read_text())["files"]
    run_pipeline(cfg, x, force=["all"])  # adopted once: later runs need no flag, and leave the files alone
    assert (x / "notes.md").read_text() == "mine" and (x / "src" / "a.py").read_text() == "print(1)"


# ---------------------------------------------------------------- row 3: a run reached through a link


def test_run_through_a_symlink_is_the_same_run(tmp_path):
    cfg = PipelineConfig.model_validate(data_only(tiny_config().data.model_dump()))
    base, link = tmp_path / "base", tmp_path / "runs" / "link"
    run_pipeline(cfg, base)
    link.parent.mkdir()
    link.symlink_to(base)
    plan = {stage: action for stage, action, _ in plan_pipeline(cfg, link)}
    assert plan["data"] == "skip"  # (was: "run (outputs changed)": every stage deleted and redone)
    started = json.loads((base / "data" / "stage.json").read_text())["started"]
    run_pipeline(cfg, link)
    run_pipeline(cfg, base)
    assert json.loads((base / "data" / "stage.json").read_text())["started"] == started


# ---------------------------------------------------------------- a user's file in a finished stage folder


def test_a_file_put_in_a_stage_folder_is_never_deleted(tmp_path):
    cfg = PipelineConfig.model_validate(data_only(tiny_config().data.model_dump()))
    run = tmp_path / "run"
    run_pipeline(cfg, run)
    (run / "data" / "notes.txt").write_text("keep me")
    for force in (["data"], []):
        changed = cfg.model_copy(deep=True)
        changed.data.seed = 1  # a new split: the data stage would be redone in an emptied folder
        with pytest.raises(
            RetinaugError, match=r"stage folder .*data holds 1 file\(s\) retinaug did not write \(notes.txt\)"
        ):
            run_pipeline(changed, run, force=force)
    assert (run / "data" / "notes.txt").read_text() == "keep me"
    (run / "data" / "notes.txt").unlink()
    run_pipeline(cfg, run, force=["data"])  # what it wrote is replaced as before
    assert len(load_manifest(run / "data")) == cfg.data.n


def test_files_of_a_killed_writer_are_its_own_and_older_files_are_not(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "before.txt").write_text("a user's")
    with pytest.raises(RetinaugError, match=r"holds 1 file\(s\) retinaug did not write \(before.txt\)"):
        check_foreign(folder, "--out")
    (folder / "before.txt").unlink()
    # a writer that dies without sealing its inventory (os._exit: what kill -9 leaves)
    script = (
        "import os, sys; from pathlib import Path; from retinaug.ownership import claim; f = Path(sys.argv[1]); "
        "claim(f); (f / 'sub').mkdir(); (f / 'sub' / 'part.png').write_bytes(b'x'); os._exit(0)"
    )
    subprocess.run([sys.executable, "-c", script, str(folder)], check=True, env=cli_env())
    assert json.loads((folder / INVENTORY).read_text())["open_since_ns"] is not None
    assert foreign(folder) == []
    clean(folder)
    assert sorted(p.name for p in folder.iterdir()) == [INVENTORY]


def test_files_that_vanish_while_a_folder_is_read_are_not_there(tmp_path, monkeypatch):
    """A dry-run reads a run folder while its holder writes: a temporary file listed by the walk and renamed into place
    before its stat (what failed `run --dry-run` next to a live run) is simply not there; the rest is still judged."""
    folder = tmp_path / "out"
    (folder / "sub").mkdir(parents=True)
    for name in ("a.txt", "gone.tmp", "sub/b.txt"):
        (folder / name).write_text("x")
    (folder / "linked").symlink_to(folder / "sub")
    real_walk = os.walk

    def walk_then_remove(top, *args, **kwargs):  # each listing goes stale at once, as under a writer
        for root, dirs, names in real_walk(top, *args, **kwargs):
            for gone in [Path(root) / n for n in names if n.endswith(".tmp")] + [
                Path(root) / d for d in dirs if d == "linked"
            ]:
                gone.unlink()
            yield root, dirs, names

    monkeypatch.setattr(os, "walk", walk_then_remove)
    assert foreign(folder) == ["a.txt", "sub/b.txt"]


def test_a_run_folder_of_an_earlier_retinaug_is_resumed(tmp_path):
    cfg = PipelineConfig.model_validate(data_only(tiny_config().data.model_dump()))
    run = tmp_path / "run"
    run_pipeline(cfg, run)
    for inv in run.rglob(INVENTORY):  # as retinaug 0.2 left it: no inventories
        inv.unlink()
    assert {s: a for s, a, _ in plan_pipeline(cfg, run)}["data"] == "skip"
    run_pipeline(cfg, run, force=["data"])
    assert json.loads((run / "data" / INVENTORY).read_text())["files"]


# ---------------------------------------------------------------- standalone verbs refuse a folder they did not write


@pytest.mark.parametrize(
    "args",
    [
        ["finetune", "--data", "D", "--out", "OUT"],
        ["generate", "--generator", "D", "--data", "D", "--out", "OUT", "--per-class", "1"],
        ["train", "--data", "D", "--out", "OUT"],
        ["prepare", "phantom", "--n", "96", "--size", "16", "--out", "OUT"],
        ["augment", "--data", "D", "--out", "OUT"],
    ],
)
def test_standalone_verbs_refuse_a_folder_holding_other_files(tmp_path, args):
    out = tmp_path / "out"
    out.mkdir()
    (out / "config.json").write_text('{"mine": true}')
    res = CliRunner().invoke(
        app, [str(out) if a == "OUT" else str(tmp_path / "missing") if a == "D" else a for a in args]
    )
    assert res.exit_code == 1 and says(res.output, "holds 1 file(s) retinaug did not write (config.json)")
    assert (
        sorted(p.name for p in out.iterdir()) == ["config.json"]
        and (out / "config.json").read_text() == '{"mine": true}'
    )


# ---------------------------------------------------------------- row 5: edits to the source dataset


def test_images_added_to_a_folder_dataset_redo_the_data_stage(tmp_path):
    data = folder_dataset(tmp_path / "ds")
    cfg = PipelineConfig.model_validate(
        data_only({"source": "folder", "path": str(data), "min_size": 16, "val": 0.2, "test": 0.2})
    )
    run_pipeline(cfg, tmp_path / "run")
    n = len(load_manifest(tmp_path / "run" / "data"))
    write_image(data / "G" / "50_left.png", seed=999, size=64)
    plan = {s: (a, why) for s, a, why in plan_pipeline(cfg, tmp_path / "run")}
    assert plan["data"] == ("run", "inputs changed (source)")  # (was: skipped, "inputs unchanged")
    run_pipeline(cfg, tmp_path / "run")
    assert len(load_manifest(tmp_path / "run" / "data")) == n + 1


def test_relabelled_odir_rows_redo_the_data_stage(tmp_path):
    table = kaggle_dataset(tmp_path / "odir", n_patients=12)
    cfg = PipelineConfig.model_validate(
        data_only({"source": "odir", "path": str(tmp_path / "odir"), "val": 0.2, "test": 0.2})
    )
    run_pipeline(cfg, tmp_path / "run")
    before = load_manifest(tmp_path / "run" / "data").set_index("patient_id")["label"]
    table.loc[table["ID"] == 4, "labels"] = "['C']"  # patient 4: N -> C
    table.to_csv(tmp_path / "odir" / "full_df.csv", index=False)
    assert {s: a for s, a, _ in plan_pipeline(cfg, tmp_path / "run")}["data"] == "run"
    run_pipeline(cfg, tmp_path / "run")
    after = load_manifest(tmp_path / "run" / "data").set_index("patient_id")["label"]
    assert set(before.loc["4"]) == {"N"} and set(after.loc["4"]) == {"C"}


# ---------------------------------------------------------------- row 7: damaged results are redone or named


def test_damaged_fit_metrics_are_redone_not_dropped(tmp_path, caplog):
    from test_experiment import _tiny_run

    from retinaug.config import load_config
    from retinaug.experiments import ExperimentConfig, run_experiments, seed_metrics

    cfg_path, run = _tiny_run(tmp_path)
    cfg = ExperimentConfig(**load_config(cfg_path).experiments.model_dump(exclude={"enabled"}))

    def experiments() -> pd.DataFrame:
        return run_experiments(
            load_manifest(run / "data"), cfg, run / "experiments", traditional=load_manifest(run / "augment")
        )

    experiments()
    metrics = run / "experiments" / "trad" / "seed0" / "metrics.json"
    good = json.loads(metrics.read_text())
    metrics.write_text('{"garbage": 1}')
    with pytest.raises(RetinaugError, match=r"trad/seed0/metrics.json is damaged"):
        seed_metrics(run / "experiments", cfg.resolve(), cfg.seed_list)  # named, never a silently missing seed
    summary = experiments()
    assert "trad/seed0: its metrics.json is damaged" in caplog.text
    assert json.loads(metrics.read_text())["macro_f1"] == good["macro_f1"]  # (was: skipped, the scenario gone)
    assert set(summary["scenario"]) == {"trad"} and "| trad |" in (run / "experiments" / "table.md").read_text()
    # a whole but stale fit says what changed, not 'damaged' (was: a new label policy read as damaged metrics)
    caplog.clear()
    run_experiments(
        load_manifest(run / "data"), cfg, run / "experiments", traditional=load_manifest(run / "augment").iloc[1:]
    )
    assert "trad/seed0: its training rows changed since it was trained: the fit is redone" in caplog.text
    assert "metrics.json is damaged" not in caplog.text


def test_damaged_labeler_metrics_redo_the_labeler(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run(), run, symlinks=True)
    (run / "labeler" / "eval" / "metrics.json").write_text("garbage")
    plan = {s: (a, why) for s, a, why in plan_pipeline(tiny_config(), run)}
    assert plan["labeler"] == ("run", "outputs changed since it finished (a file was rewritten)")
    from retinaug.report.generation import section_labeling

    assert "labeler/eval/metrics.json is damaged" in str(section_labeling(run))


def test_dataset_fingerprint_ignores_what_it_does_not_read(tmp_path):
    """The source hash is the tree's file identity: reading the files changes nothing, touching one does."""
    from retinaug.fingerprint import tree_identity

    data = folder_dataset(tmp_path / "ds", patients=2)
    first = tree_identity(data)
    for p in data.rglob("*.png"):
        p.read_bytes()
    assert tree_identity(data) == first
    os.utime(data / "G" / "0_left.png", ns=(0, 0))
    assert tree_identity(data) != first
