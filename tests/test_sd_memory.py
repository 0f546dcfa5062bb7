"""sd-lora's memory options (issue 30) on a tiny random Stable Diffusion: gradient checkpointing recomputes activations
and leaves the loss, the gradients and the trained LoRA as they are; VAE slicing leaves the images as they are; VAE
tiling changes nothing up to the VAE's own size and a little above it; the first two do not change the generator stage's
hash, tiling does. Also the real-size benchmark script at tiny widths (and, marked slow, at real size)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from safetensors.torch import load_file
from test_generate_sd import TINY, data, sd_folder  # noqa: F401  (fixtures)
from tiny_sd import single_thread  # noqa: F401  (fixture)

from retinaug.config import GeneratorStage
from retinaug.generate import SDLoRAConfig, create_generator, finetune
from retinaug.generate.base import TrainSet
from retinaug.generate.config import SD_MEMORY_OPTIONS
from retinaug.generate.run import train_rows
from retinaug.manifest import load_manifest
from retinaug.stages import OPERATIONAL, config_hash

pytestmark = pytest.mark.usefixtures("single_thread")
BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def built(sd_folder, **config):
    """A generator of G and C built on the tiny base (LoRA attached, seeded), as `fit` builds it before training."""
    gen = create_generator("sd-lora", {**TINY, "base_model": str(sd_folder), **config})
    gen.classes = ["G", "C"]
    torch.manual_seed(0)
    gen.build()
    return gen


def count_calls(module: torch.nn.Module, calls: list[str], name: str) -> None:
    """Append `name` to `calls` whenever `module.forward` runs (forward hooks do not fire in a checkpoint's recompute)."""
    forward = module.forward

    def counted(*args, **kwargs):
        calls.append(name)
        return forward(*args, **kwargs)

    module.forward = counted


def test_memory_options_defaults_and_validation():
    cfg = SDLoRAConfig()
    assert (cfg.gradient_checkpointing, cfg.vae_slicing, cfg.vae_tiling) == (False, True, False)
    assert (OPERATIONAL["gradient_checkpointing"], OPERATIONAL["vae_slicing"]) == (
        False,
        True,
    )  # hashed as the defaults
    with pytest.raises(ValidationError, match="gradient_checkpointing"):
        SDLoRAConfig(gradient_checkpointing="sometimes")


def test_gradient_checkpointing_recomputes_and_gives_the_same_loss_and_gradients(sd_folder, data):
    """One forward + backward on the same batch and noise: with checkpointing the UNet's last resnet and the CLIP's last
    MLP run twice (the recompute), the loss is the same and every LoRA gradient equal to float rounding."""
    results = {}
    for on in (False, True):
        gen = built(sd_folder, train_text_encoder=True, gradient_checkpointing=on)
        gen.data = TrainSet(train_rows(load_manifest(data), gen.classes), 32, gen.conditions)
        calls = []
        for net, kind in ((gen.unet, "ResnetBlock2D"), (gen.text_encoder, "CLIPMLP")):
            last = [m for m in net.modules() if type(m).__name__ == kind][
                -1
            ]  # after LoRA layers: the backward pass reaches it
            count_calls(last, calls, kind)
        for m in gen.trainable().values():
            m.train()  # transformers checkpoints in training mode only, as fit trains
        torch.manual_seed(1)
        loss = gen._loss(gen.trainable(), torch.tensor([0, 3]), torch.tensor([False, True]))
        loss.backward()
        grads = {
            f"{part}.{k}": p.grad
            for part, m in gen.trainable().items()
            for k, p in m.named_parameters()
            if p.requires_grad
        }
        results[on] = loss.item(), grads, sorted(calls), gen.phases()[0].settings
    (loss_off, grads_off, calls_off, settings_off), (loss_on, grads_on, calls_on, settings_on) = (
        results[False],
        results[True],
    )
    assert calls_off == ["CLIPMLP", "ResnetBlock2D"]
    assert calls_on == ["CLIPMLP"] * 2 + ["ResnetBlock2D"] * 2
    assert loss_on == pytest.approx(loss_off, rel=1e-6)
    assert grads_on.keys() == grads_off.keys() and any(k.startswith("text_encoder.") for k in grads_on)
    for k, g in grads_off.items():
        torch.testing.assert_close(grads_on[k], g, rtol=1e-5, atol=1e-7, msg=k)
    assert settings_on == settings_off  # a training checkpoint resumes after the option is switched (e.g. after an OOM)


def test_one_step_trainings_with_and_without_checkpointing_give_the_same_lora(sd_folder, data, tmp_path):
    for on in (False, True):
        finetune(
            data,
            SDLoRAConfig(**{**TINY, "base_model": str(sd_folder), "steps": 1, "gradient_checkpointing": on}),
            tmp_path / str(on),
        )
    a, b = (load_file(tmp_path / str(on) / "pytorch_lora_weights.safetensors") for on in (False, True))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=1e-5, msg=k)
    meta = json.loads((tmp_path / "True" / "config.json").read_text())  # recorded, and shown on the model card
    assert {k: meta["config"][k] for k in ("gradient_checkpointing", "vae_slicing", "vae_tiling")} == {
        "gradient_checkpointing": True,
        "vae_slicing": True,
        "vae_tiling": False,
    }
    assert "gradient_checkpointing: true" in (tmp_path / "True" / "README.md").read_text()


@pytest.fixture(scope="module")
def untrained(sd_folder, data):
    """An untrained generator of G and C and two of its TRAIN images (img2img parents)."""
    gen = built(sd_folder)
    return gen, list(train_rows(load_manifest(data), gen.classes)["path"][:2])


def sample(untrained, **config) -> tuple[np.ndarray, np.ndarray]:
    """Three txt2img and two img2img images (each call one batch) with the generator's config updated by `config`."""
    gen, parents = untrained
    gen.config = gen.config.model_copy(update=config)
    pipe = gen.pipeline()
    return pipe(["G", "C", "G"], [1, 2, 3], steps=2), pipe(["G", "C"], [4, 5], parents=parents, strengths=0.9, steps=2)


def test_vae_slicing_gives_the_same_images(untrained):
    vae = untrained[0].vae
    whole = sample(untrained, vae_slicing=False)
    assert not vae.use_slicing
    sliced = sample(untrained, vae_slicing=True)
    assert vae.use_slicing
    for a, b in zip(whole, sliced):
        assert np.abs(a.astype(int) - b).max() <= 1  # CPU kernels may round one grey level apart across batch sizes


def test_vae_tiling_changes_nothing_up_to_the_vae_size_and_a_little_above(untrained):
    """The tiny VAE's own size is 32 px (SD 1.5's: 512): at 32 px tiling is a no-op; at 64 px the latents are decoded
    in overlapping 32 px tiles blended at the seams, and the pixels move (by how much depends on the weights: random
    here, so it is not asserted)."""
    vae = untrained[0].vae
    for a, b in zip(
        sample(untrained, size=vae.config.sample_size, vae_tiling=False),
        sample(untrained, size=vae.config.sample_size, vae_tiling=True),
    ):
        np.testing.assert_array_equal(a, b)
    assert vae.use_tiling
    plain = sample(untrained, size=2 * vae.config.sample_size, vae_tiling=False)
    tiled = sample(untrained, size=2 * vae.config.sample_size, vae_tiling=True)
    assert plain[0].shape == tiled[0].shape == (3, 64, 64, 3)
    assert all(not np.array_equal(a, b) for a, b in zip(plain, tiled))


def test_operational_options_keep_the_generator_stage_hash_tiling_does_not():
    def stage_hash(**options) -> str:
        return config_hash(GeneratorStage(method="sd-lora", sd_lora=SDLoRAConfig(**options)).result_config())

    default = stage_hash()
    assert stage_hash(gradient_checkpointing=True) == stage_hash(vae_slicing=False) == default
    assert stage_hash(vae_tiling=True) != default != stage_hash(rank=8)
    # a generator stage an earlier retinaug finished (its config had none of the three) is not redone
    before = GeneratorStage(method="sd-lora").result_config()
    for option in SD_MEMORY_OPTIONS:
        del before["config"][option]
    assert config_hash(before) == default


def run_benchmark(*args: str) -> dict:
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import sd_real_size
    finally:
        sys.path.remove(str(BENCHMARKS))
    return sd_real_size.main(list(args))


BENCHMARK_FIELDS = (
    "train_s_per_step",
    "train_checkpointed_s_per_step",
    "train_peak_rss_gib",
    "train_checkpointed_peak_rss_gib",
    "txt2img_s_per_image",
    "img2img_s_per_image",
    "sample_peak_rss_gib",
    "step_tflop",
    "step_tflop_512",
    "unet_saved_gib_512",
    "unet_saved_checkpointed_gib_512",
    "cpu_gflops",
    "h100_s_per_step_512_estimate",
)


def test_real_size_benchmark_runs_at_tiny_widths(capsys):
    result = run_benchmark("--tiny", "--size", "64", "--steps", "2", "--sample-steps", "2")
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line == result and line["widths"] == "tiny" and line["size"] == 64
    for field in BENCHMARK_FIELDS:
        assert isinstance(line[field], float) and line[field] > 0, field
    assert line["step_tflop_512"] > line["step_tflop"]  # counted at 512 px and at the run's size
    assert line["unet_saved_checkpointed_gib_512"] < line["unet_saved_gib_512"]


@pytest.mark.slow
def test_real_size_benchmark(tmp_path):
    """SD 1.5's real shapes on the CPU, as a user runs the script (its own process, every thread): minutes and a 6.5 GB
    folder (run with -m slow -n 0 on an otherwise idle machine)."""
    subprocess.run(
        [
            sys.executable,
            str(BENCHMARKS / "sd_real_size.py"),
            "--folder",
            str(tmp_path),
            "--out",
            str(tmp_path / "out.json"),
        ],
        check=True,
    )
    result = json.loads((tmp_path / "out.json").read_text())
    assert result["widths"] == "real" and 8.5e8 < result["unet_parameters"] < 8.7e8
    assert all(result[field] > 0 for field in BENCHMARK_FIELDS)
