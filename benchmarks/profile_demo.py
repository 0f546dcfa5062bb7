"""Where `retinaug demo` spends its time (issue 31): the stage times from the run's records and py-spy's sampled
profile of the whole command, summed by function (self time) and by the library-level frames that own it.

  pip install py-spy
  python benchmarks/profile_demo.py --out /tmp/demo-prof          # -> benchmarks/results/profile-demo-TAG.{json,md}
  python benchmarks/profile_demo.py --out /tmp/demo-prof --no-profile  # stage times only, no sampler overhead
  python benchmarks/profile_demo.py --out /tmp/demo-avx2 --no-profile --isa avx2  # as on an AVX2-only CPU (below)

`--isa avx2` stands in for an AVX2-only CPU (AMD Zen 3, older Xeons) on a newer one: torch's own kernels
(ATEN_CPU_CAPABILITY), oneDNN's (ONEDNN_MAX_CPU_ISA) and MKL's (MKL_ENABLE_INSTRUCTIONS) are held to AVX2, and every
stage trains and samples in fp32, as `precision: auto` does on a CPU without bf16 units. Clock, caches and memory
stay this machine's: a real AVX2-only CPU may be slower still (the 2026-12-02 Zen 3 took 19.6 min where a Zen 4 took
6-7.5), so compare its before/after ratio, not its minutes, with another machine's.

py-spy samples the Python stacks of the process (and its subprocesses) 100 times a second, native frames excluded;
(compare its wall time with --no-profile for its overhead). The stage times come from RUN/<stage>/stage.json as the pipeline wrote them.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from retinaug.hardware import cpu_model
from retinaug.ownership import foreign

RESULTS = Path(__file__).resolve().parent / "results"
# files that say which part of the library a sample belongs to (the innermost one found in its stack wins); py-spy
# names a frame "function (path/file.py:line)"
OWNERS = (
    "torch/autograd/",
    "torch/optim/",
    "torchvision/transforms/",
    "classify/evaluate.py",
    "classify/train.py",
    "classify/data.py",
    "classify/models.py",
    "generate/sampling.py",
    "generate/base.py",
    "generate/run.py",
    "experiments/runner.py",
    "quality/",
    "report/",
    "select.py",
    "ingest/",
    "phantom/",
    "cache.py",
)
# the demo's settings whose `auto` precision is bf16 on a CPU with bf16 units and fp32 without
AUTO_PRECISION = (
    "generator.ddpm.mixed_precision",
    "synthetic.precision",
    "labeler.train.mixed_precision",
    "experiments.train.mixed_precision",
)
IDLE = "_RefreshThread.run"  # the progress bar's redraw thread, asleep between redraws; py-spy samples it as active


def stage_seconds(run: Path) -> dict[str, float]:
    """Seconds per stage from the run's stage records (RUN/<stage>/stage.json)."""
    out = {}
    for status in sorted(run.glob("*/stage.json"), key=lambda s: s.stat().st_mtime):
        record = json.loads(status.read_text())
        if isinstance(record.get("seconds"), (int, float)):
            out[status.parent.name] = round(record["seconds"], 1)
    return out


def summarise(raw: Path, top: int) -> dict:
    """Self time per function and time per owning library file, as fractions of all samples but the progress bar's
    idle redraw thread, from py-spy's raw (collapsed-stack) output."""
    self_time, owned, total = collections.Counter(), collections.Counter(), 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n, frames = int(count), stack.split(";")
        if any(IDLE in f for f in frames):
            continue
        total += n
        self_time[frames[-1]] += n
        owner = next((o for f in reversed(frames) for o in OWNERS if o in f.replace("\\", "/")), "other")
        owned[owner] += n
    share = lambda c: [{"frame": k, "share": round(v / total, 4)} for k, v in c.most_common(top)]  # noqa: E731
    return {"samples": total, "self": share(self_time), "owner": share(owned)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--out", type=Path, required=True, help="run folder (removed first if it holds only files retinaug wrote)"
    )
    p.add_argument("--tag", default="", help="suffix of the results files (e.g. zen5-before)")
    p.add_argument("--no-profile", action="store_true", help="time the stages without py-spy")
    p.add_argument("--top", type=int, default=25)
    p.add_argument(
        "--isa",
        choices=["native", "avx2"],
        default="native",
        help="avx2: hold the kernels to AVX2 and fp32 (see above)",
    )
    args = p.parse_args()
    if stray := foreign(args.out, limit=5):  # only a folder of retinaug's own files is removed
        sys.exit(f"{args.out} holds files retinaug did not write ({', '.join(stray)}): choose another --out")
    if args.out.exists():
        shutil.rmtree(args.out)
    demo = [shutil.which("retinaug") or "retinaug", "demo", "--out", str(args.out)]
    env = dict(os.environ)
    if args.isa == "avx2":
        env.update(ATEN_CPU_CAPABILITY="avx2", ONEDNN_MAX_CPU_ISA="AVX2", MKL_ENABLE_INSTRUCTIONS="AVX2")
        for key in AUTO_PRECISION:
            demo += ["--set", f'{key}="no"']  # quoted: commits before this one read a bare `no` as False
    raw = args.out.with_name(args.out.name + "-pyspy.txt")
    cmd = (
        demo
        if args.no_profile
        else [
            "py-spy",
            "record",
            "--rate",
            "100",
            "--subprocesses",
            "--format",
            "raw",
            "--output",
            str(raw),
            "--",
            *demo,
        ]
    )
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=env)
    result = {
        "cpu": cpu_model(),
        "isa": args.isa,
        "command": " ".join(demo),
        "wall_s": round(time.perf_counter() - t0, 1),
        "stages_s": stage_seconds(args.out),
        "profiled": not args.no_profile,
    }
    if not args.no_profile:
        result["profile"] = summarise(raw, args.top)
    name = "profile-demo" + (f"-{args.tag}" if args.tag else "")
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=1) + "\n")
    isa = " (AVX2 kernels, fp32)" if args.isa == "avx2" else ""
    lines = [
        f"`{result['command']}` on {result['cpu']}{isa}: {result['wall_s']} s",
        "",
        "| stage | s |",
        "|---|---:|",
        *(f"| {k} | {v} |" for k, v in result["stages_s"].items()),
    ]
    if "profile" in result:
        for kind in ("owner", "self"):
            lines += [
                "",
                f"| {kind} | share |",
                "|---|---:|",
                *(f"| `{r['frame']}` | {r['share']:.1%} |" for r in result["profile"][kind]),
            ]
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
