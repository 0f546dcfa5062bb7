"""The experiment grid sequential vs on Ray, in one run: wall ratio, and Ray's own overhead per task.

Runs the same grid twice into a temporary folder: `executor: local` (one fit after another, 1 torch thread)
and `executor: ray` on an embedded Ray instance of `--workers` CPUs (1 CPU and 1 thread per fit); checks that
every fit's metrics.json is identical; then times a no-op Ray task (one at a time: the latency a fit pays to be
scheduled; many at once: the throughput cost). The image cache is filled before both runs.

The grid: with --run, the experiments of a finished run folder (its config.yaml and its data/label/selection/
augment manifests, e.g. `retinaug demo` -> runs/demo: the demo's 6 scenarios x 3 seeds); without, phantom data of
the demo's size and the demo's classifier recipe on the `controls` set (3 scenarios x 3 seeds, real data only).

  taskset -c 0,1 python benchmarks/ray_grid.py --run runs/demo --workers 2 --name demo-2core
  python benchmarks/ray_grid.py --smoke        # tiny, seconds of fitting (CI)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import ray
import torch

from retinaug.cache import image_cache
from retinaug.config import load_config
from retinaug.experiments import ExperimentConfig, run_experiments
from retinaug.hardware import environment
from retinaug.io import write_json_atomic
from retinaug.manifest import load_manifest

RESULTS = Path(__file__).resolve().parent / "results"
SMOKE = {
    "sets": [],
    "seeds": 2,
    "n_boot": 10,
    "scenarios": [
        {"name": "real", "task": "G,C,A"},
        {"name": "weighted", "task": "G,C,A", "imbalance": "class-weights"},
    ],
    "train": {"backbone": "resnet10t", "size": 16, "epochs": 1, "batch_size": 16, "augment": False},
}


def noop() -> None:
    """The task whose round trip is Ray's overhead per task."""


def grid(args, work: Path) -> tuple[dict, dict]:
    """(run_experiments keyword arguments but the config, the experiments config as a dict)."""
    if args.run:
        cfg = load_config(args.run / "config.yaml")
        found = {
            k: load_manifest(args.run / stage) if (args.run / stage / "manifest.parquet").is_file() else None
            for k, stage in (("synthetic", "label"), ("selection", "selection"), ("traditional", "augment"))
        }
        return {"data": load_manifest(args.run / "data"), **found}, cfg.experiments.model_dump(exclude={"enabled"})
    from retinaug.phantom import PhantomConfig, make_phantom

    if args.smoke:
        data = make_phantom(
            PhantomConfig(n=96, size=16, proportions={"G": 1, "C": 1, "A": 1}, val=0.2, test=0.25), work / "data"
        )
        return {"data": data}, SMOKE
    demo = load_config(preset="demo")
    data = make_phantom(demo.data, work / "data")  # the demo run's data section (a PhantomConfig)
    exp = demo.experiments.model_dump(exclude={"enabled"})
    return {"data": data}, {**exp, "sets": ["controls"], "only": []}


def metrics(out: Path) -> dict[str, dict]:
    return {
        p.parent.relative_to(out).as_posix(): json.loads(p.read_text())
        for p in sorted(out.glob("*/seed*/metrics.json"))
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--run", type=Path, help="a finished run folder whose experiments grid to time (default: phantom + controls)"
    )
    p.add_argument("--workers", type=int, default=2, help="Ray workers (1 CPU, 1 thread each)")
    p.add_argument("--noop-tasks", type=int, default=200, help="no-op tasks timed for the overhead per task")
    p.add_argument("--smoke", action="store_true", help="a tiny grid (2 fits x 2 seeds at 16 px), for CI")
    p.add_argument("--name", default="cpu", help="writes benchmarks/results/ray-grid-NAME.json")
    p.add_argument("--out", type=Path, help="the JSON path (default: benchmarks/results/ray-grid-NAME.json)")
    args = p.parse_args(argv)
    os.environ.setdefault("RETINAUG_QUIET", "1")
    work = Path(tempfile.mkdtemp(prefix="ray-grid-bench-"))
    try:
        inputs, exp = grid(args, work)
        image_cache(inputs["data"], exp["train"]["size"])  # decoded once, before either run is timed
        before = torch.get_num_threads()
        torch.set_num_threads(1)
        t0 = time.perf_counter()
        run_experiments(cfg=ExperimentConfig(**exp), out=work / "local", **inputs)
        local_s = time.perf_counter() - t0
        torch.set_num_threads(before)

        started_here = not ray.is_initialized()
        t0 = time.perf_counter()
        if started_here:
            ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False)
        init_s = time.perf_counter() - t0 if started_here else None
        try:
            t0 = time.perf_counter()
            run_experiments(cfg=ExperimentConfig(**{**exp, "executor": "ray"}), out=work / "ray", **inputs)
            ray_s = time.perf_counter() - t0
            task = ray.remote(num_cpus=1)(noop)
            ray.get(task.remote())  # a worker is up
            t0 = time.perf_counter()
            for _ in range(args.noop_tasks):
                ray.get(task.remote())
            latency_ms = (time.perf_counter() - t0) / args.noop_tasks * 1e3
            t0 = time.perf_counter()
            ray.get([task.remote() for _ in range(args.noop_tasks)])
            batch_ms = (time.perf_counter() - t0) / args.noop_tasks * 1e3
            cpus = ray.cluster_resources().get("CPU")
        finally:
            if started_here:
                ray.shutdown()
        seq, par = metrics(work / "local"), metrics(work / "ray")
        result = {
            "name": args.name,
            "smoke": args.smoke,
            "grid": str(args.run or ("smoke" if args.smoke else "phantom controls")),
            "fits": len(seq),
            "ray_cpus": cpus,
            "workers": args.workers,
            "sequential_s": round(local_s, 2),
            "ray_s": round(ray_s, 2),
            "wall_ratio": round(local_s / ray_s, 3),
            "ray_init_s": None if init_s is None else round(init_s, 2),
            "noop_task_latency_ms": round(latency_ms, 3),
            "noop_task_batch_ms": round(batch_ms, 3),
            "metrics_identical": seq == par and len(seq) > 0,
            "load_average": os.getloadavg(),
            "machine": {k: environment()[k] for k in ("cpu", "cores_usable", "packages")},
        }
        result["machine"]["packages"]["ray"] = ray.__version__
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out = args.out or RESULTS / f"ray-grid-{args.name}.json"
    write_json_atomic(out, result)
    print(
        "| grid | fits | sequential s | Ray s (workers) | wall ratio | Ray start s | no-op task ms (one / batch) | identical |"
    )
    print("|---|---|---|---|---|---|---|---|")
    print(
        f"| {result['grid']} | {result['fits']} | {result['sequential_s']} | {result['ray_s']} ({args.workers}) | "
        f"{result['wall_ratio']} | {result['ray_init_s']} | {result['noop_task_latency_ms']} / {result['noop_task_batch_ms']} | "
        f"{result['metrics_identical']} |"
    )
    return result


if __name__ == "__main__":
    main()
