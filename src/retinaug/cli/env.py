"""CLI verb `env` and the `--version` flag: what to paste into a bug report."""

from __future__ import annotations

import json
from typing import Annotated, Optional

import typer

from .app import app, console


def _print_version(value: bool) -> None:
    if value:
        from .. import __version__

        console.print(f"retinaug {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_print_version,
            is_eager=True,
            help="Print retinaug's version and exit (`retinaug env` for the whole environment).",
        ),
    ] = False,
    threads: Annotated[
        Optional[int],
        typer.Option(
            "--threads",
            min=1,
            help="CPU threads for torch and BLAS. Default: OMP_NUM_THREADS if set, else the cores this process may use (its CPU affinity: taskset -c, docker --cpuset-cpus). Jobs sharing cores: give each its own (taskset -c) or --threads 1.",
        ),
    ] = None,
) -> None:
    """Root options; the application's help text is set in app.py. Every verb shows retinaug's log on stderr."""
    from ..hardware import configure_threads
    from ..logs import setup_console_logging

    configure_threads(threads)
    setup_console_logging()


@app.command("env")
def env_cmd(
    as_json: Annotated[bool, typer.Option("--json", help="Print the same facts as one JSON object.")] = False,
) -> None:
    """Print package versions, the CPU and whether bf16 is fast on it, threads, GPUs and the ImageNet weights
    sources `pretrained: imagenet` can read: for bug reports.

    Covers retinaug, python, torch, diffusers, transformers, peft, timm, accelerate and the data libraries.

    Example: retinaug env
    """
    from ..classify.imagenet import EXTRA, sources_report
    from ..hardware import environment

    facts = {**environment(), "imagenet_weights": sources_report()}
    # plain print, not the rich console: a bug report's lines must not wrap at the terminal width or lose [brackets]
    if as_json:
        print(json.dumps(facts, indent=2))
        return
    for name, version in facts["packages"].items():
        print(f"{name:<14} {version}")
    print(f"{'python':<14} {facts['python']}  ({facts['platform']})")
    print(f"{'torch build':<14} {'CUDA ' + facts['torch_cuda_build'] if facts['torch_cuda_build'] else 'CPU only'}")
    units = ", ".join(facts["cpu_bf16_units"]) or "none: bf16 is emulated, fp32 is faster"
    print(f"{'cpu':<14} {facts['cpu']}; torch capability {facts['cpu_capability']}; bf16 units: {units}")
    print(
        f"{'threads':<14} torch uses {facts['torch_threads']} of the {facts['cores_usable']} cores this process may use"
    )
    if facts["cuda_devices"]:
        for d in facts["cuda_devices"]:
            print(f"{'cuda:' + str(d['index']):<14} {d['name']} (compute {d['capability']}, {d['memory_gib']} GiB)")
        print(f"{'cuda bf16':<14} {'yes' if facts['cuda_bf16'] else 'no'}")
    else:
        print(f"{'cuda':<14} no device visible" + ("; Apple MPS available" if facts["mps"] else ""))
    for s in facts["imagenet_weights"]:
        package = (
            f"{s['package']} {s['package_version']} installed"
            if s["package_version"]
            else f"{s['package']} not installed ({EXTRA})"
        )
        cache = f"in the HF cache ({s['hf_cache']})" if s["hf_cache"] else "not in the HF cache"
        print(f"{'imagenet':<14} {s['backbone']}: {package}; timm:{s['timm_tag']} {cache}")
