"""Settings checked before the first stage, and stops that explain themselves (issue 26: rows 10, 12, 13b, 14, 16
and a truncated manifest): an option the data source does not read, seeds and numbers a fit would reject or that
would fill the memory, a weights write that fails, SIGTERM, a damaged manifest of a finished stage."""

from __future__ import annotations

import json
import resource
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import make_dataset
from pipeline_helpers import TINY
from test_faults import ENV, class_folders, says
from typer.testing import CliRunner

from retinaug.cli import app
from retinaug.config import load_config
from retinaug.generate import LDMConfig, finetune
from retinaug.manifest import load_manifest
from retinaug.pipeline import plan_pipeline, run_pipeline
from retinaug.stages import read_record

runner = CliRunner()
OTHER_STAGES_OFF = {
    s: {"enabled": False}
    for s in ("generator", "synthetic", "labeler", "selection", "augment", "experiments", "quality")
}


def stage_folders(run: Path) -> list[str]:
    """The folders a run made (the lock file aside)."""
    return sorted(p.name for p in run.iterdir() if p.is_dir()) if run.exists() else []


def stopped_before_any_stage(result, run: Path, *texts: str) -> None:
    """Exit 1 with a one-line-per-problem error (no traceback) naming each text, and no stage folder made."""
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), (result.exception, result.output[-2000:])
    assert says(result.output, *texts), result.output
    assert stage_folders(run) == []


def tiny_yaml(folder: Path, **sections: dict) -> Path:
    """The shared tiny pipeline config with `sections` replaced, written to FOLDER/cfg.yaml."""
    raw = {**json.loads(json.dumps(TINY)), **sections}
    (folder / "cfg.yaml").write_text(yaml.safe_dump(raw))
    return folder / "cfg.yaml"


def run_checked(tmp_path: Path, settings: list[str], dry_run: bool):
    """`retinaug run --set SETTING...`: on the demo preset with --dry-run, else on the tiny config's data stage alone
    (the stage a run starts with, were the settings not checked first). Returns the result and the run folder."""
    run = tmp_path / "run"
    config = ["--preset", "demo", "--dry-run"] if dry_run else [str(tiny_yaml(tmp_path, **OTHER_STAGES_OFF))]
    return runner.invoke(app, ["run", *config, "--out", str(run), *(a for s in settings for a in ("--set", s))]), run


# --- row 10: an option the data source does not read --------------------------------------------------------------


@pytest.mark.parametrize("dry_run", [True, False])
@pytest.mark.parametrize(
    "settings, said",
    [
        (["data.path=/etc"], "data: path (odir/folder only): not read when source is phantom"),
        (
            ["data.source=folder", "data.path=x"],
            "data: n (phantom only), size (phantom only): not read when source is folder",
        ),
    ],
)
def test_option_the_data_source_does_not_read_stops_before_any_stage(tmp_path, settings, said, dry_run):
    """(was: the phantom ran and data.path was ignored without a word)"""
    stopped_before_any_stage(*run_checked(tmp_path, settings, dry_run), said)


# --- rows 13b and 14: numbers a fit would reject, counts that would fill the memory ---------------------------------


@pytest.mark.parametrize("dry_run", [True, False])
@pytest.mark.parametrize(
    "setting, said",
    [
        (
            "experiments.seeds=1000000000000",
            "experiments.seeds: must be at most 10000 (seeds are fits, one after another) (got 1000000000000)",
        ),
        ("experiments.seeds=[0, 4294967296]", "experiments.seeds: a seed must lie in 0..4294967295, not 4294967296"),
        ("experiments.seeds=[-1]", "experiments.seeds: a seed must lie in 0..4294967295, not -1"),
        ("experiments.train.lr=.inf", "experiments.train.lr: Input should be a finite number (got inf)"),
        ("labeler.train.weight_decay=.nan", "labeler.train.weight_decay: Input should be a finite number (got nan)"),
        ("generator.ddpm.ema_power=.inf", "generator.ddpm.ema_power: Input should be a finite number"),
        ("data.seed=-1", "data.seed: Input should be greater than or equal to 0 (got -1)"),
        ("generator.ddpm.seed=4294967296", "generator.ddpm.seed: Input should be less than or equal to 4294967295"),
        ("synthetic.seed=-5", "synthetic.seed: Input should be greater than or equal to 0"),
        ("selection.seed=4294967296", "selection.seed: Input should be less than or equal to 4294967295"),
        ("data.n=1000000000000", "data.n: Input should be less than or equal to 100000"),
        ("synthetic.per_class=1000000000000", "synthetic.per_class: Input should be less than or equal to 100000"),
        (
            "generator.ddpm.batch_size=1000000000000",
            "generator.ddpm.batch_size: Input should be less than or equal to 4096",
        ),
        ("experiments.n_boot=1000000000000", "experiments.n_boot: Input should be less than or equal to 100000"),
    ],
)
def test_settings_a_fit_would_reject_stop_before_any_stage(tmp_path, setting, said, dry_run):
    """(was: a traceback after the generator and labeler had run, or `list(range(n))` killed at 22 GB)"""
    stopped_before_any_stage(*run_checked(tmp_path, [setting], dry_run), said)


def test_the_largest_seed_trains_a_two_phase_generator(tmp_path):
    """2**32 - 1 is accepted, so it must work: ldm's second phase seeds with seed + 1009, wrapped into numpy's range.
    (was: "Seed must be between 0 and 2**32 - 1" from accelerate, after the autoencoder had trained)"""
    data = Path(
        make_dataset(tmp_path / "data", classes=("G", "C"), patients_per_class=4, size=16).attrs["manifest_dir"]
    )
    config = {
        "seed": 2**32 - 1,
        "size": 16,
        "vae_block_out_channels": [8, 8],
        "vae_steps": 2,
        "vae_batch_size": 4,
        "steps": 2,
        "batch_size": 4,
        "block_out_channels": [8, 16],
        "norm_num_groups": 8,
        "warmup_steps": 1,
        "samples_per_class": 1,
        "recon_images": 2,
    }
    meta = finetune(data, LDMConfig(**config), tmp_path / "gen")
    history = json.loads((tmp_path / "gen" / "history.json").read_text())
    assert meta["config"]["seed"] == 2**32 - 1 and history["vae"]["steps"] == 2 and history["steps"] == 2


# --- row 12: a weights write that fails -----------------------------------------------------------------------------


@pytest.fixture
def file_size_limit():
    """Files written by this process may hold at most 512 KB (`ulimit -f`): a real write failure (EFBIG) that hits
    the weights only, as a full disk would. SIGXFSZ is ignored, so the write fails instead of killing pytest."""
    old_limit, old_handler = resource.getrlimit(resource.RLIMIT_FSIZE), signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (512 * 1024, old_limit[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
        signal.signal(signal.SIGXFSZ, old_handler)


@pytest.mark.parametrize("stage, target", [("generator", "generator"), ("labeler", "labeler/model.safetensors")])
@pytest.mark.usefixtures("file_size_limit")
def test_failed_weights_write_is_one_line_and_keeps_the_finished_stages(tmp_path, stage, target):
    """safetensors raises SafetensorError, not OSError, when its write fails: now the one-line write error, exit 1;
    the data stage stays finished, and the next run would skip it and redo the failed one. (was: a SafetensorError traceback)"""
    cfg, run = (
        tiny_yaml(tmp_path, **{**OTHER_STAGES_OFF, stage: {**TINY.get(stage, {}), "enabled": True}}),
        tmp_path / "run",
    )
    result = runner.invoke(app, ["run", str(cfg), "--out", str(run)])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), (result.exception, result.output[-2000:])
    assert says(result.output, f"cannot write {run / target}: file too large"), result.output
    assert read_record(run / "data")["status"] == "done" and len(load_manifest(run / "data")) == TINY["data"]["n"]
    assert read_record(run / stage)["status"] == "failed"
    plan = {name: action for name, action, _ in plan_pipeline(load_config(cfg), run)}
    assert (plan["data"], plan[stage]) == ("skip", "resume")


# --- row 16: SIGTERM ------------------------------------------------------------------------------------------------


def test_sigterm_says_what_stopped_and_the_run_resumes(tmp_path):
    """SIGTERM (kill, schedulers, docker stop) in the generator stage, right after its first optimiser step (the
    fault hook: a fixed point, whatever the machine's speed): one line saying what stopped and how to resume, exit
    143; the same command then resumes the stage. (was: exit 143, no message)"""
    cfg, run = (
        tiny_yaml(tmp_path, **{**OTHER_STAGES_OFF, "generator": {**TINY["generator"], "enabled": True}}),
        tmp_path / "run",
    )
    command = ["run", str(cfg), "--out", str(run)]
    proc = subprocess.run(
        [sys.executable, "-c", "from retinaug.cli import main; main()", *command],
        env={**ENV, "RETINAUG_FAULT": "term@step:1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    err = proc.stderr
    lines = [line for line in err.splitlines() if line.strip()]
    assert proc.returncode == 143 and "Traceback" not in err, err[-2000:]
    assert lines[-1].startswith("retinaug run: interrupted (terminated) during stage generator"), lines[-1]
    assert lines[-1].endswith(
        f"finished work is kept; run the same command again to resume: {shlex.join(['retinaug', *command])}"
    )
    assert read_record(run / "data")["status"] == "done" and read_record(run / "generator")["status"] != "done"
    run_pipeline(load_config(cfg), run)  # the same command again, in this process
    assert (
        read_record(run / "generator")["status"] == "done"
        and read_record(run / "generator")["why"] == "its last attempt was interrupted"
    )


@pytest.mark.xdist_group("ray")  # with test_ray_executor.py: one Ray instance at a time
def test_ray_leaves_the_sigterm_handler_to_the_cli():
    """ray.init makes SIGTERM a silent sys.exit(15); with `executor: ray` the CLI's handler is put back, so SIGTERM
    stops `retinaug experiment` with the message above. (was: exit 15, no message)"""
    ray = pytest.importorskip("ray")
    from retinaug.cli import _interrupt
    from retinaug.experiments import ExperimentConfig
    from retinaug.experiments.ray_executor import connected

    assert not ray.is_initialized()  # else `connected` would not start Ray, and this would test nothing
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        with connected(ExperimentConfig(executor="ray", workers=1)):
            assert signal.getsignal(signal.SIGTERM) is _interrupt
    finally:
        signal.signal(signal.SIGTERM, previous)


# --- a truncated manifest of a finished stage -------------------------------------------------------------------------


@pytest.mark.parametrize("source", ["phantom", "folder"])
def test_truncated_manifest_of_a_finished_stage_is_redone(tmp_path, source):
    """The data stage's manifest.parquet cut in half after it finished: the next run redoes the stage (the dry run
    says why) and ends with the same rows. (was: "cannot read manifest ...", and every run stopped there)"""
    data = (
        TINY["data"]
        if source == "phantom"
        else {"source": "folder", "path": str(class_folders(tmp_path / "images", n=8)), "val": 0.25, "test": 0.25}
    )
    cfg, run = load_config(tiny_yaml(tmp_path, data=data, **OTHER_STAGES_OFF)), tmp_path / "run"
    run_pipeline(cfg, run)
    rows = load_manifest(run / "data")
    manifest = run / "data" / "manifest.parquet"
    manifest.write_bytes(manifest.read_bytes()[: manifest.stat().st_size // 2])
    data_plan = plan_pipeline(cfg, run)[0]
    assert data_plan[:2] == ("data", "run") and data_plan[2].startswith("outputs unreadable (cannot read manifest"), (
        data_plan
    )
    run_pipeline(cfg, run)
    assert load_manifest(run / "data")[["label", "patient_id", "split"]].equals(rows[["label", "patient_id", "split"]])
