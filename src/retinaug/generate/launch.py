"""Sampling in several processes from inside one Python process: `generate_in_processes` starts `torchrun` on this
module, whose processes split the plan as `generate` does under `accelerate launch` (one GPU each).

The pipeline's synthetic stage uses it when several GPUs are visible (`synthetic.processes`). The caller keeps
whatever it holds (the run lock): the workers call `generate` directly, not the CLI verb that would lock the run.
Their output is relayed line by line to this process's log, so it lands in the stage's log file.

    python -m retinaug.generate.launch JOB.json     # what each torchrun process runs (JOB: generator, data, config, out)
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections import deque
from pathlib import Path

import pandas as pd

from ..errors import RetinaugError
from ..hardware import usable_cores
from ..io import write_json_atomic
from ..manifest import load_manifest
from .config import GenerateConfig

log = logging.getLogger("retinaug.generate")
JOB_NAME = ".launch.json"


def process_count(processes: int | str) -> int:
    """`auto`: one process per visible CUDA GPU (1 without GPUs); an int is taken as asked, up to one per GPU
    where there are GPUs (each process samples on its own one)."""
    import torch

    gpus = torch.cuda.device_count()
    if processes == "auto":
        return max(gpus, 1)
    if gpus and int(processes) > gpus:
        raise RetinaugError(
            f"synthetic.processes {processes} is more than the {gpus} visible GPU(s): use auto or at most {gpus}"
        )
    return int(processes)


def generate_in_processes(
    generator: str | Path, data: str | Path, config: GenerateConfig, out: str | Path, processes: int
) -> pd.DataFrame:
    """`generate(generator, data, config, out)` split across `processes` torchrun processes; the manifest it wrote.

    Each process gets usable cores / processes intra-op threads (they would otherwise each take every core)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    job = out / JOB_NAME
    write_json_atomic(
        job,
        {
            "generator": str(Path(generator).resolve()),
            "data": str(Path(data).resolve()),
            "config": config.model_dump(mode="json", include=set(GenerateConfig.model_fields)),
            "out": str(out.resolve()),
        },
    )
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        str(processes),
        "-m",
        "retinaug.generate.launch",
        str(job),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": str(max(usable_cores() // processes, 1)), "RETINAUG_QUIET": "1"}
    log.info("sampling in %d processes: %s", processes, " ".join(cmd[1:]))
    tail: deque[str] = deque(maxlen=30)
    errors: list[str] = []  # the workers' own error lines (torchrun's traceback of their exit follows them)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    try:
        for line in proc.stdout:
            line = line.rstrip()
            tail.append(line)
            if line.startswith("[process") and "] error: " in line:
                errors.append(line)
            log.info("%s", line)
        code = proc.wait()
    except BaseException:  # Ctrl-C or an error here: stop the workers (torchrun passes the signal on), keep their PNGs
        proc.terminate()
        proc.wait()
        raise
    finally:
        job.unlink(missing_ok=True)
    if code != 0:
        said = "\n".join(errors) if errors else "its last lines:\n" + "\n".join(tail)
        raise RetinaugError(
            f"sampling in {processes} processes failed (torchrun exit code {code}):\n{said}\n"
            "re-run to resume: the images written so far are kept"
        )
    return load_manifest(out)


def main(argv: list[str] | None = None) -> None:
    from .run import generate

    (path,) = argv if argv is not None else sys.argv[1:]
    job = json.loads(Path(path).read_text())
    handler = logging.StreamHandler(sys.stdout)  # plain lines, relayed by the launching process into its log
    handler.setFormatter(logging.Formatter(f"[process {int(os.environ.get('RANK', 0)) + 1}] %(message)s"))
    root = logging.getLogger("retinaug")
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        generate(job["generator"], job["data"], GenerateConfig(**job["config"]), job["out"])
    except RetinaugError as exc:  # the user's mistake: its message, not a traceback per process
        root.error("error: %s", exc)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
