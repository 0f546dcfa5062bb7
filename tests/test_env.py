"""`retinaug env` / `--version` print what a bug report needs; the lock pins every dependency pyproject names."""

from __future__ import annotations

import json
import re
from importlib import metadata
from pathlib import Path

import pytest
import torch
from packaging.requirements import Requirement
from typer.testing import CliRunner

from retinaug import __version__
from retinaug.cli import app
from retinaug.hardware import MIN_CPU_BF16_SIZE, cpu_bf16_units, cpu_kind, cpu_model, fast_cpu_bf16, resolve_precision

ROOT = Path(__file__).resolve().parents[1]


def test_env_json_reports_installed_versions_and_cpu():
    result = CliRunner().invoke(app, ["env", "--json"])
    assert result.exit_code == 0, result.output
    facts = json.loads(result.output)
    for name in ("retinaug", "torch", "diffusers", "transformers", "peft", "timm", "accelerate"):
        assert facts["packages"][name] == metadata.version(name)
    assert facts["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert facts["cpu_bf16_fast"] == bool(facts["cpu_bf16_units"]) == fast_cpu_bf16()
    assert facts["torch_threads"] == torch.get_num_threads() and facts["cores_usable"] >= 1
    assert len(facts["cuda_devices"]) == (torch.cuda.device_count() if torch.cuda.is_available() else 0)


@pytest.mark.skipif(not Path("/proc/cpuinfo").is_file(), reason="no /proc/cpuinfo (not Linux)")
def test_cpu_name_and_kind_are_the_first_processors():
    """What benchmarks record as the machine: the name, and lscpu's family and model numbers (`lscpu` reads these)."""
    text = Path("/proc/cpuinfo").read_text()
    name, family, model = (
        re.search(rf"^{k}\s*: (.*)$", text, re.M).group(1) for k in ("model name", "cpu family", "model")
    )
    assert cpu_model() == name and cpu_kind() == f"{name}, family {family} model {model}"


def test_env_text_names_each_package_and_the_bf16_verdict():
    result = CliRunner().invoke(app, ["env"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert f"peft           {metadata.version('peft')}" in lines
    assert f"transformers   {metadata.version('transformers')}" in lines
    assert re.search(r"bf16 units: (AMX|AVX512-BF16|none: bf16 is emulated)", result.output)


def test_env_lines_do_not_wrap_on_a_narrow_terminal(monkeypatch):
    """A CPU without bf16 units gives the longest cpu line; pasted into a bug report it must stay one line."""
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setenv("COLUMNS", "40")
    result = CliRunner().invoke(app, ["env"])
    assert result.exit_code == 0, result.output
    cpu = [line for line in result.output.splitlines() if line.startswith("cpu ")]
    assert len(cpu) == 1 and cpu[0].endswith("bf16 units: none: bf16 is emulated, fp32 is faster")


@pytest.mark.parametrize(
    "amx, avx512_bf16, units",
    [(True, True, ["AMX", "AVX512-BF16"]), (True, False, ["AMX"]), (False, True, ["AVX512-BF16"]), (False, False, [])],
)
def test_bf16_is_fast_only_with_bf16_units(monkeypatch, amx, avx512_bf16, units):
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    assert cpu_bf16_units() == units
    assert fast_cpu_bf16() is bool(units)


@pytest.mark.parametrize("units", [True, False])
def test_auto_precision_on_the_cpu_is_bf16_with_bf16_units_and_inputs_of_32_px_or_more(monkeypatch, units):
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: units)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    bf16 = "bf16" if units else "no"
    assert MIN_CPU_BF16_SIZE == 32
    assert (
        resolve_precision("auto", "cpu")
        == resolve_precision("auto", "cpu", 32)
        == resolve_precision("auto", "cpu", 256)
        == bf16
    )
    assert resolve_precision("auto", "cpu", 16) == resolve_precision("auto", "cpu", 31) == "no"  # oneDNN's 1x1-map bug
    assert (
        resolve_precision("bf16", "cpu", 16) == "bf16" and resolve_precision("no", "cpu", 256) == "no"
    )  # asked: as given


def test_version_flag():
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"retinaug {__version__}"


def _pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version.strip()
    return pins


def test_lock_pins_every_dependency_within_its_range():
    """Adding a dependency to pyproject.toml without refreshing the lock (`bash .ci/lock`) fails here."""
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = _pins()
    for spec in project["dependencies"] + project["optional-dependencies"]["dev"]:
        req = Requirement(spec)
        name = re.sub(r"[-_.]+", "-", req.name).lower()
        assert name in pins, f"{req.name} is not pinned in constraints.txt: run `bash .ci/lock`"
        assert req.specifier.contains(pins[name], prereleases=True), (
            f"{req.name}=={pins[name]} is outside {req.specifier}"
        )


def test_stages_with_different_precisions_share_one_process(tiny_data, tmp_path):
    """A bf16 classifier fit, then an fp32 generator fit, then a bf16 one (one `retinaug run` process): accelerate's
    process-wide state must not refuse the second and third setting."""
    from retinaug.classify import TrainConfig, fit
    from retinaug.generate import DDPMConfig, finetune

    df = tiny_data
    clf = fit(
        df[df["split"] == "train"],
        df[df["split"] == "val"],
        TrainConfig(task="G,C,A", backbone="test_resnet", size=16, epochs=1, mixed_precision="bf16"),
        tmp_path / "clf",
    )
    assert clf["timings"]["precision"] == "bf16"
    tiny = {
        "size": 16,
        "steps": 2,
        "batch_size": 4,
        "block_out_channels": [8, 16],
        "norm_num_groups": 4,
        "warmup_steps": 0,
        "samples_per_class": 1,
    }
    data = tiny_data.attrs["manifest_dir"]
    for precision in ("no", "bf16"):
        finetune(data, DDPMConfig(**tiny, mixed_precision=precision), tmp_path / f"gen-{precision}", checkpoint_every=0)
        history = json.loads((tmp_path / f"gen-{precision}" / "history.json").read_text())
        assert history["precision"] == precision


def test_cli_sets_torch_threads_to_the_usable_cores_unless_told(monkeypatch):
    """At start-up: --threads wins, then OMP_NUM_THREADS; otherwise the affinity mask's cores (mocked: 3 cores)."""
    import os

    before = torch.get_num_threads()
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2})
    try:
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        facts = json.loads(CliRunner().invoke(app, ["env", "--json"]).output)
        assert facts["torch_threads"] == before and facts["cores_usable"] == 3  # the user's OMP_NUM_THREADS stands
        assert os.environ["OMP_NUM_THREADS"] == "1"
        monkeypatch.delenv("OMP_NUM_THREADS")
        facts = json.loads(CliRunner().invoke(app, ["env", "--json"]).output)
        assert facts["torch_threads"] == 3 and os.environ["OMP_NUM_THREADS"] == "3"  # inherited by child processes
        facts = json.loads(CliRunner().invoke(app, ["--threads", "2", "env", "--json"]).output)
        assert facts["torch_threads"] == 2 and os.environ["OMP_NUM_THREADS"] == "2"
        res = CliRunner().invoke(app, ["--threads", "0", "env"])
        assert res.exit_code == 2 and "--threads" in res.output
    finally:
        torch.set_num_threads(before)
