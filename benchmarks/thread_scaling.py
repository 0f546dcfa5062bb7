"""Would work side by side beat two threads on this CPU? (issue 31). The demo's generator training and one of its
classifier fits, each run as the CLI runs them (`retinaug finetune`, `retinaug train`, a process each) three ways:
alone with 2 torch threads, alone with 1, and two copies side by side with 1 thread each (pinned to cores 0 and 1).

  python benchmarks/thread_scaling.py                       # -> benchmarks/results/thread-scaling-TAG.{json,md}
  python benchmarks/thread_scaling.py --steps 100 --tag zen5

The speed of each process is what it records itself (history.json's seconds for the generator: its steps; model.json's
train_s for the fit: its epochs; no imports or image loading), so start-up is not counted. `side by side / 2 threads`
above 1 means two jobs at 1 thread each get through more work than one at 2 threads: where it holds, running
independent fits (the Ray executor's `workers`) or stages concurrently is the lever left; below 1, threads are.
Run it alone on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from retinaug.config import preset_dict
from retinaug.hardware import cpu_kind
from retinaug.io import write_json_atomic, write_text_atomic

RESULTS = Path(__file__).resolve().parent / "results"
CLI = [sys.executable, "-c", "from retinaug.cli import main; main()"]


def job_commands(demo: dict, data: Path, steps: int) -> dict[str, Callable[[Path], list[str]]]:
    """For each job, a function of an output folder giving its command line (the demo's own settings)."""
    ddpm = {**demo["generator"]["ddpm"], "steps": steps}
    fit = {**demo["experiments"]["train"], "task": "5-class"}
    return {
        "generator": lambda out: [
            *CLI, "finetune", "--data", str(data), "--out", str(out), "--method", "ddpm",
            *[a for k, v in ddpm.items() for a in ("--set", f"{k}={json.dumps(v)}")],
        ],
        "classifier fit": lambda out: [
            *CLI, "train", "--data", str(data), "--out", str(out),
            *[a for k, v in fit.items() for a in ("--set", f"{k}={json.dumps(v)}")],
        ],
    }  # fmt: skip


def speed(job: str, out: Path) -> float:
    """Seconds of training the process recorded: the generator's history.json, the fit's model.json."""
    if job == "generator":
        return json.loads((out / "history.json").read_text())["seconds"]
    return json.loads((out / "model.json").read_text())["timings"]["train_s"]


def run(commands: list[list[str]], threads: int, pin: bool) -> None:
    """The commands at once, `threads` torch threads each, pinned to one core each when `pin`."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "RETINAUG_QUIET": "1"}
    procs = [
        subprocess.Popen(
            ["taskset", "-c", str(core), *cmd] if pin else cmd,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for core, cmd in enumerate(commands)
    ]
    for p in procs:
        _, err = p.communicate()
        if p.returncode != 0:
            raise SystemExit(f"{p.args} failed with exit code {p.returncode}:\n{err[-3000:]}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=100, help="generator training steps per run (the demo trains 800)")
    p.add_argument("--tag", default="cpu", help="writes benchmarks/results/thread-scaling-TAG.{json,md}")
    args = p.parse_args()
    demo = preset_dict("demo")
    work = Path(tempfile.mkdtemp(prefix="thread-scaling-"))
    try:
        data_cfg = {k: demo["data"][k] for k in ("n", "size", "val", "test", "seed")}
        subprocess.run(
            [*CLI, "prepare", "phantom", "--out", str(work / "data"), *[f"--{k}={v}" for k, v in data_cfg.items()]],
            check=True, stdout=subprocess.DEVNULL, env={**os.environ, "RETINAUG_QUIET": "1"},
        )  # fmt: skip
        rows = []
        for job, command in job_commands(demo, work / "data", args.steps).items():
            seconds = {}
            for mode, threads, copies in (("2 threads", 2, 1), ("1 thread", 1, 1), ("side by side", 1, 2)):
                outs = [work / f"{job}-{mode}-{i}".replace(" ", "-") for i in range(copies)]
                run([command(o) for o in outs], threads, pin=copies > 1)
                seconds[mode] = max(speed(job, o) for o in outs)
            rows.append(
                {
                    "job": job,
                    **{f"{m} s": round(s, 2) for m, s in seconds.items()},
                    "2 threads / 1 thread": round(seconds["1 thread"] / seconds["2 threads"], 2),
                    # work done per second side by side (2 jobs) over one job at 2 threads
                    "side by side / 2 threads": round(2 * seconds["2 threads"] / seconds["side by side"], 2),
                }
            )
            print(rows[-1], flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    cpu = cpu_kind()
    result = {"command": " ".join(sys.argv), "cpu": cpu, "cores": os.cpu_count(), "steps": args.steps, "rows": rows}
    write_json_atomic(RESULTS / f"thread-scaling-{args.tag}.json", result)
    head = list(rows[0])
    table = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    table += ["| " + " | ".join(str(r[h]) for h in head) + " |" for r in rows]
    write_text_atomic(
        RESULTS / f"thread-scaling-{args.tag}.md", f"{cpu}, {args.steps} generator steps\n\n" + "\n".join(table) + "\n"
    )
    print("\n".join(table))


if __name__ == "__main__":
    main()
