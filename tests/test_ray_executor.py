"""executor: ray on a local 2-CPU Ray instance (started once for this module): the same metrics as the local runner,
a fit that raises is retried and reported while the others finish, a killed worker's fit is re-run, and a re-run
skips every finished fit. Every fit is real (tiny: 16 px, resnet10t, 2 epochs)."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import ray
import yaml

from retinaug.errors import RetinaugError
from retinaug.experiments import ExperimentConfig, run_experiments
from retinaug.experiments.fit import FIT_LOG
from retinaug.faults import ENV

TRAIN = {"backbone": "resnet10t", "size": 16, "epochs": 2, "batch_size": 8, "augment": False}
# two GPUs declared (none present) so GPU placement can be tested
RAY = dict(num_cpus=2, num_gpus=2, include_dashboard=False, log_to_driver=False)
pytestmark = pytest.mark.xdist_group("ray")  # one Ray instance at a time on the machine (pyproject: --dist loadgroup)
STARTED = re.compile(r"started on \S+, pid (\d+), (\d+) thread")


@pytest.fixture(scope="module")
def ray_instance():
    # run_experiments uses it and leaves it running
    ray.init(**RAY)
    yield
    ray.shutdown()


@pytest.fixture
def frozen_workers(ray_instance):
    """The module's Ray instance restarted with RETINAUG_FAULT=freeze@epoch:1 in its workers' environment (not the
    driver's): every fit stops (SIGSTOP) after its first epoch and cannot finish; afterwards the usual instance."""
    ray.shutdown()
    os.environ[ENV] = "freeze@epoch:1"
    try:
        ray.init(**RAY)  # the raylet and the workers it starts inherit the variable
    finally:
        del os.environ[ENV]
    yield
    ray.shutdown()
    ray.init(**RAY)


@pytest.fixture(scope="module")
def grid(tmp_path_factory) -> tuple[pd.DataFrame, dict, Path]:
    """Tiny data, a 2 scenario x 2 seed grid, and the local runner's results on it: `retinaug experiment` in a fresh
    process with 1 torch thread, as every Ray task is (a fresh worker, ray.num_cpus 1: the same float reduction
    order). Not in this process: after the tests before it, its state is not a fresh one's."""
    from conftest import make_dataset
    from pipeline_helpers import cli, cli_env

    root = tmp_path_factory.mktemp("grid")
    data = make_dataset(root / "data", classes=("G", "C", "A"), patients_per_class=6, size=16)
    cfg = {
        "sets": [],
        "seeds": 2,
        "n_boot": 20,
        "train": TRAIN,
        "scenarios": [
            {"name": "real", "task": "G,C,A"},
            {"name": "weighted", "task": "G,C,A", "imbalance": "class-weights"},
        ],
    }
    (root / "cfg.yaml").write_text(yaml.safe_dump({"experiments": cfg}))
    res = subprocess.run(
        cli("experiment", "--config", str(root / "cfg.yaml"), "--run", str(root)),
        env={**cli_env(), "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    local = root / "experiments"
    assert {name: [t for _, t in _attempts(local / name)] for name in _metrics(local)} == {
        f"{sc}/seed{k}": [1] for sc in ("real", "weighted") for k in (0, 1)
    }  # one attempt each, 1 thread
    return data, cfg, local


def _metrics(out: Path) -> dict[str, dict]:
    return {
        p.parent.relative_to(out).as_posix(): json.loads(p.read_text())
        for p in sorted(out.glob("*/seed*/metrics.json"))
    }


def _attempts(folder: Path) -> list[tuple[int, int]]:
    """(pid, threads) of every attempt that started in this fit folder."""
    return [(int(m[1]), int(m[2])) for m in STARTED.finditer((folder / FIT_LOG).read_text())]


def _curve(folder: Path) -> list[tuple[float, float, float]]:
    """A fit's (train loss, val loss, val macro-F1) per epoch, from its model.json (without the timings)."""
    history = json.loads((folder / "model.json").read_text())["history"]
    return [(r["train_loss"], r["val_loss"], r["val_macro_f1"]) for r in history]


def _stamps(out: Path) -> dict[str, int]:
    return {p.relative_to(out).as_posix(): p.stat().st_mtime_ns for p in out.glob("*/seed*/*") if p.is_file()}


def test_ray_grid_metrics_equal_local_runner(ray_instance, grid, tmp_path, monkeypatch, caplog):
    data, cfg, local = grid
    monkeypatch.setenv("RETINAUG_PROGRESS_EVERY", "0")  # a progress line at every update
    caplog.set_level(logging.INFO, logger="retinaug")
    run_experiments(data, ExperimentConfig(**cfg, executor="ray"), tmp_path / "ray")
    reference = _metrics(local)
    assert sorted(reference) == ["real/seed0", "real/seed1", "weighted/seed0", "weighted/seed1"]
    for name in reference:  # what each fit was given (process, threads, recipe), then what it learnt, then its scores
        attempts = _attempts(tmp_path / "ray" / name)
        assert len(attempts) == 1 and attempts[0][0] != os.getpid() and attempts[0][1] == 1  # a Ray worker, 1 thread
        assert json.loads((tmp_path / "ray" / name / "recipe.json").read_text()) == json.loads(
            (local / name / "recipe.json").read_text()
        )
        assert _curve(tmp_path / "ray" / name) == _curve(local / name), name
    assert _metrics(tmp_path / "ray") == reference
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "ray" / "summary.csv"), pd.read_csv(local / "summary.csv"))
    progress = [r.getMessage() for r in caplog.records if r.name == "retinaug.progress"]
    assert any(m.startswith("fits on Ray: 4/4 (100%)") and "4 done, 0 running, 0 failed" in m for m in progress), (
        progress
    )


def test_fits_asking_for_gpu_shares_are_placed_on_the_gpus(ray_instance, grid, tmp_path):
    """ray.num_gpus 0.5 on an instance with two GPUs: Ray hands each fit a GPU through CUDA_VISIBLE_DEVICES (its
    fit.log says which). The GPUs here are declared, not real, so torch trains on the CPU: the same metrics."""
    data, cfg, local = grid
    run_experiments(data, ExperimentConfig(**cfg, executor="ray", ray={"num_gpus": 0.5}), tmp_path / "ray")
    assert _metrics(tmp_path / "ray") == _metrics(local)
    placed = {
        name: re.search(r"CUDA_VISIBLE_DEVICES=(\S+)", (tmp_path / "ray" / name / FIT_LOG).read_text())
        for name in _metrics(local)
    }
    assert all(placed.values()) and {m[1] for m in placed.values()} <= {"0", "1"}


def test_failed_fit_is_retried_then_reported_while_the_others_finish(ray_instance, grid, tmp_path, monkeypatch, caplog):
    """Scenario `gca` trains on G, C and A, but the data has no A train image left: its fit raises in the worker."""
    data, _, _ = grid
    data = data[~((data["label"] == "A") & (data["split"] == "train"))].reset_index(drop=True)
    cfg = ExperimentConfig(
        sets=[],
        seeds=[0],
        n_boot=20,
        train=TRAIN,
        executor="ray",
        ray={"max_retries": 1},
        scenarios=[{"name": "gc", "task": "G,C"}, {"name": "gca", "task": "G,C,A"}],
    )
    monkeypatch.setenv("RETINAUG_PROGRESS_EVERY", "0")
    caplog.set_level(logging.INFO, logger="retinaug")
    out = tmp_path / "exp"
    with pytest.raises(RetinaugError, match="1 of 2 fits failed after 2 attempt") as err:
        run_experiments(data, cfg, out)
    assert "gca/seed0: RetinaugError: class(es) A have no training image" in str(err.value)
    assert "only the failed ones run" in str(err.value)
    assert (out / "gc" / "seed0" / "metrics.json").is_file()  # the other fit finished
    assert not (out / "gca" / "seed0" / "metrics.json").exists() and not (out / "summary.csv").exists()
    assert "no training image" in (out / "gca" / "seed0" / "error.txt").read_text()
    assert len(_attempts(out / "gca" / "seed0")) == 2  # tried, then retried once (max_retries 1)
    assert "no training image" in (out / "gca" / "seed0" / FIT_LOG).read_text()  # each attempt's traceback
    assert any(
        "gca/seed0 failed after 2 attempt(s)" in r.getMessage() for r in caplog.records if r.levelno == logging.ERROR
    )
    assert any("1 done, 0 running, 1 failed" in r.getMessage() for r in caplog.records if r.name == "retinaug.progress")

    stamps = _stamps(out / "gc")
    with pytest.raises(RetinaugError, match="1 of 1 fits failed"):  # re-running runs only the failed fit
        run_experiments(data, cfg, out)
    assert _stamps(out / "gc") == stamps


def test_killed_worker_is_rerun_and_a_rerun_skips_every_finished_fit(ray_instance, grid, tmp_path):
    """SIGKILL the worker process training real/seed0 (its pid is in fit.log): Ray runs the fit again."""
    data, cfg, local = grid
    out = tmp_path / "exp"
    log_file = out / "real" / "seed0" / FIT_LOG
    killed: list[int] = []

    def kill_first_attempt() -> None:
        deadline = time.time() + 120
        while time.time() < deadline and not killed:
            found = STARTED.search(log_file.read_text()) if log_file.is_file() else None
            if found:
                os.kill(int(found[1]), signal.SIGKILL)
                killed.append(int(found[1]))
            time.sleep(0.01)

    watcher = threading.Thread(target=kill_first_attempt, daemon=True)
    watcher.start()
    run_experiments(data, ExperimentConfig(**cfg, executor="ray"), out)
    watcher.join()
    attempts = _attempts(out / "real" / "seed0")
    assert killed and len(attempts) == 2 and attempts[0][0] == killed[0] != attempts[1][0]
    assert _metrics(out) == _metrics(local)  # the re-run fit equals an uninterrupted one

    stamps, logs = _stamps(out), {n: (out / n / FIT_LOG).read_text() for n in _metrics(out)}
    run_experiments(data, ExperimentConfig(**cfg, executor="ray"), out)
    assert _stamps(out) == stamps  # nothing retrained or rewritten
    assert {n: (out / n / FIT_LOG).read_text() for n in _metrics(out)} == logs


def test_ray_missing_is_a_clear_error(monkeypatch, tmp_path):
    from retinaug.checks import check_pipeline
    from retinaug.config import load_config
    from retinaug.experiments.ray_executor import import_ray
    from retinaug.pipeline import enabled_stages, resolve

    monkeypatch.setitem(
        sys.modules, "ray", None
    )  # `import ray` fails and find_spec("ray") is None, as where it is missing
    with pytest.raises(RetinaugError, match=re.escape('pip install "retinaug[ray]"')):
        import_ray()
    cfg = resolve(load_config(preset="demo", overrides=["experiments.executor=ray"]))
    with pytest.raises(
        RetinaugError, match=re.escape('experiments.executor ray needs Ray: pip install "retinaug[ray]"')
    ):
        check_pipeline(cfg, tmp_path, enabled_stages(cfg))


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"workers": 2}, "workers: 2 fits at once need executor: ray"),
        ({"ray": {"num_gpus": 0.5}}, "ray: set, but read only when executor is ray"),
        (
            {"executor": "ray", "workers": 2, "ray": {"address": "head:6379"}},
            "workers: sizes the embedded Ray instance only",
        ),
        ({"executor": "ray", "ray": {"num_cpus": 0}}, "experiments.ray.num_cpus: Input should be greater than 0"),
        ({"executor": "dask"}, "experiments.executor: Input should be 'local' or 'ray'"),
    ],
)
def test_executor_settings_are_validated(settings, message):
    from retinaug.config import load_config

    with pytest.raises(RetinaugError, match=re.escape(message)):
        load_config(overrides=[f"experiments.{k}={json.dumps(v)}" for k, v in settings.items()])


def test_executor_settings_do_not_change_the_stage_hash():
    from retinaug.config import load_config
    from retinaug.stages import config_hash

    local = load_config(preset="demo").experiments.result_config()
    on_ray = load_config(
        preset="demo",
        overrides=[
            "experiments.executor=ray",
            "experiments.workers=2",
            'experiments.ray={"num_gpus": 0.5, "max_retries": 0}',
        ],
    ).experiments.result_config()
    assert local != on_ray and config_hash(local) == config_hash(on_ray)


def test_benchmark_smoke_times_both_executors_and_the_noop_task(ray_instance, tmp_path, capsys):
    """benchmarks/ray_grid.py --smoke, in this process (on this module's Ray instance: its start is not timed)."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "ray_grid.py"
    spec = importlib.util.spec_from_file_location("ray_grid_benchmark", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    result = bench.main(["--smoke", "--noop-tasks", "20", "--out", str(tmp_path / "r.json")])
    assert json.loads((tmp_path / "r.json").read_text()) == json.loads(json.dumps(result))
    assert (
        result["fits"] == 4 and result["metrics_identical"] and result["ray_cpus"] == 2 and result["ray_init_s"] is None
    )
    assert (
        result["sequential_s"] > 0
        and result["ray_s"] > 0
        and result["wall_ratio"] == pytest.approx(result["sequential_s"] / result["ray_s"], rel=0.01)
    )
    assert 0 < result["noop_task_latency_ms"] < 5000 and 0 < result["noop_task_batch_ms"] < 5000
    assert "| smoke | 4 |" in capsys.readouterr().out


def test_ctrl_c_cancels_the_fits_still_running(frozen_workers, grid, tmp_path):
    """SIGINT in the driver (with the CLI's handler) once a fit has started, its worker frozen after its first epoch
    so that no fit can finish first: the call stops with the CLI's Interrupted, naming the loop, and Ray kills the
    workers of its fits."""
    from retinaug.cli import Interrupted, _interrupt

    data, cfg, _ = grid
    out = tmp_path / "exp"
    started: list[int] = []

    def interrupt_once_started() -> None:
        deadline = time.time() + 120
        while time.time() < deadline and not started:
            for log_file in out.glob(f"*/seed*/{FIT_LOG}"):
                if found := STARTED.search(log_file.read_text()):
                    started.append(int(found[1]))
                    os.kill(os.getpid(), signal.SIGINT)
                    break
            time.sleep(0.01)

    watcher = threading.Thread(target=interrupt_once_started, daemon=True)
    watcher.start()
    previous = signal.signal(signal.SIGINT, _interrupt)
    try:
        with pytest.raises(Interrupted) as stop:
            run_experiments(data, ExperimentConfig(**cfg, executor="ray"), out)
    finally:
        signal.signal(signal.SIGINT, previous)
    watcher.join()
    assert stop.value.args[0].startswith("fits on Ray 0/4")  # the CLI's message: 'interrupted during fits on Ray 0/4'

    def alive(pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True

    deadline = time.time() + 30
    while alive(started[0]) and time.time() < deadline:
        time.sleep(0.1)
    assert not alive(started[0])  # the worker training the fit was stopped, not left running
    finished = sorted(out.glob("*/seed*/metrics.json"))
    assert finished == [] and not (out / "summary.csv").exists()
    time.sleep(2)
    assert sorted(out.glob("*/seed*/metrics.json")) == finished  # nothing goes on in the background
