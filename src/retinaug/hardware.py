"""What this machine is: package versions, CPU capability (fast bf16 or not), threads, accelerators.

`retinaug env` prints it for bug reports; `resolve_precision` turns the configs' `mixed_precision: auto`
into what this device runs fastest without changing results beyond seed noise. Torch is imported inside
the functions so that `retinaug --help` stays fast.
"""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata

PACKAGES = (
    "retinaug",
    "torch",
    "torchvision",
    "diffusers",
    "transformers",
    "peft",
    "timm",
    "accelerate",
    "safetensors",
    "torchmetrics",
    "scikit-learn",
    "numpy",
    "pandas",
    "pyarrow",
    "pillow",
)


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    """Installed distribution versions ('not installed' for missing ones)."""
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def cpu_bf16_units() -> list[str]:
    """The CPU's bf16 matrix units torch can use: 'AMX' and/or 'AVX512-BF16' (empty: bf16 is emulated, slow)."""
    import torch

    units = []
    if torch.cpu._is_amx_tile_supported():
        units.append("AMX")
    if torch.cpu._is_avx512_bf16_supported():
        units.append("AVX512-BF16")
    return units


def fast_cpu_bf16() -> bool:
    """True when bf16 autocast is faster than fp32 on this CPU (it has AMX or AVX512-BF16 units)."""
    return bool(cpu_bf16_units())


# torch 2.14's oneDNN computes a wrong, run-to-run different weight gradient (NaN at times) for a bf16 strided 3x3 or
# 5x5 convolution over a 1x1 map (seen on an AMD EPYC with AVX512-BF16, 2026-12-07); inputs this small reach one in
# a stride-32 backbone, so they train in fp32 on the CPU.
MIN_CPU_BF16_SIZE = 32


def resolve_precision(precision: str, device: str = "cpu", size: int | None = None) -> str:
    """accelerate's `mixed_precision` for a config value: 'auto' is bf16 autocast on a CPU with bf16 units
    (AMX / AVX512-BF16: measured 1.4-2.9x faster than fp32; for classifier inputs of at least MIN_CPU_BF16_SIZE
    pixels when `size` is given) and on GPUs that support it, fp16 on older GPUs, and 'no' (fp32) elsewhere; any
    other value is returned as given."""
    if precision != "auto":
        return precision
    import torch

    kind = torch.device(device).type
    if kind == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if kind == "cpu":
        return "bf16" if fast_cpu_bf16() and (size is None or size >= MIN_CPU_BF16_SIZE) else "no"
    return "no"


def autocast(precision: str, device: str | object = "cpu"):
    """A torch.autocast context for a resolved precision ('bf16', 'fp16'; 'no' = plain fp32)."""
    import torch

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    return torch.autocast(torch.device(device).type, dtype=dtype, enabled=dtype is not None)


def new_accelerator(**kwargs):
    """An `accelerate.Accelerator`. accelerate keeps one process-wide state and refuses a second Accelerator with
    other settings (a bf16 labeler after an fp32 generator in one `retinaug run`), so that state is reset first."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    try:
        return Accelerator(**kwargs)
    except ValueError:
        AcceleratorState._reset_state(reset_partial_state=True)
        return Accelerator(**kwargs)


def default_device(cpu: bool = False) -> str:
    """The device accelerate picks: the GPU when one is visible (unless `cpu`), else the CPU."""
    import torch

    return "cuda" if torch.cuda.is_available() and not cpu else "cpu"


def _cpuinfo() -> dict[str, str]:
    """The first processor's fields in /proc/cpuinfo (Linux; empty elsewhere)."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if not line.strip():
                    break  # the first processor's block ends
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
    except OSError:
        pass
    return fields


def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo (Linux), else platform.processor()."""
    return _cpuinfo().get("model name") or platform.processor() or platform.machine()


def cpu_kind() -> str:
    """The name with lscpu's family and model numbers (`AMD EPYC, family 26 model 2`): virtual machines often report
    a name alone, which does not tell CPU generations apart, and benchmark figures hold for one kind."""
    info = _cpuinfo()
    return f"{cpu_model()}, family {info.get('cpu family', '?')} model {info.get('model', '?')}"


def usable_cores() -> int:
    """Cores this process may run on (its affinity mask, which containers and taskset narrow)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def configure_threads(threads: int | None = None) -> int | None:
    """Intra-op threads of this process (torch, and the BLAS/OpenMP libraries) at start-up: `threads` when given,
    else the cores it may use (`usable_cores`) unless OMP_NUM_THREADS is already set (the user's choice stands).
    Exported as OMP_NUM_THREADS, so torch imported later starts with it and processes started from here inherit
    it; torch already imported is set directly. Returns the count set, or None when OMP_NUM_THREADS was kept."""
    if threads is None:
        if os.environ.get("OMP_NUM_THREADS"):
            return None
        threads = usable_cores()
    if threads < 1:
        from .errors import RetinaugError

        raise RetinaugError(f"--threads must be at least 1, got {threads}")
    os.environ["OMP_NUM_THREADS"] = str(threads)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    return threads


def environment() -> dict:
    """Everything `retinaug env` prints, as plain data."""
    import torch

    units = cpu_bf16_units()
    cuda = (
        [
            {
                "index": i,
                "name": torch.cuda.get_device_name(i),
                "capability": ".".join(map(str, torch.cuda.get_device_capability(i))),
                "memory_gib": round(torch.cuda.get_device_properties(i).total_memory / 2**30, 1),
            }
            for i in range(torch.cuda.device_count())
        ]
        if torch.cuda.is_available()
        else []
    )
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": package_versions(),
        "torch_cuda_build": torch.version.cuda,
        "cpu": cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_bf16_units": units,
        "cpu_bf16_fast": bool(units),
        "cores_usable": usable_cores(),
        "torch_threads": torch.get_num_threads(),
        "cuda_devices": cuda,
        "cuda_bf16": bool(cuda) and torch.cuda.is_bf16_supported(),
        "mps": bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()),
    }
