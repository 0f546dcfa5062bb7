"""ldm end to end on a tiny dataset: autoencoder then latent UNet, saved, reloaded, txt2img and img2img,
reconstruction scores on val images, and SIGKILL in either phase resuming to the uninterrupted weights."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import kill9_at, make_dataset
from PIL import Image
from safetensors.torch import load_file
from tiny_sd import single_thread  # noqa: F401  (fixture)

from retinaug.cache import load_image
from retinaug.generate import GenerateConfig, LDMConfig, finetune, generate, load_generator

pytestmark = pytest.mark.usefixtures("single_thread")

TINY = {
    "size": 32,
    "vae_block_out_channels": [16, 16],
    "latent_channels": 4,
    "vae_steps": 6,
    "vae_batch_size": 4,
    "steps": 6,
    "batch_size": 8,
    "block_out_channels": [16, 32],
    "attention_levels": [],
    "norm_num_groups": 8,
    "warmup_steps": 1,
    "samples_per_class": 1,
    "recon_images": 8,
}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return Path(make_dataset(tmp_path_factory.mktemp("ldm") / "data", classes=("G", "C")).attrs["manifest_dir"])


def _weights(folder: Path) -> dict:
    return {
        **{f"unet.{k}": v for k, v in load_file(folder / "unet" / "diffusion_pytorch_model.safetensors").items()},
        **{f"vae.{k}": v for k, v in load_file(folder / "vae" / "diffusion_pytorch_model.safetensors").items()},
    }


def test_ldm_train_save_reload_sample_img2img(data, tmp_path):
    meta = finetune(data, LDMConfig(**TINY), tmp_path / "gen")
    assert meta["method"] == "ldm" and meta["classes"] == ["G", "C"]
    hist = json.loads((tmp_path / "gen" / "history.json").read_text())
    assert hist["steps"] == 6 and hist["vae"]["steps"] == 6 and np.isfinite(hist["loss"]).all()
    assert hist["vae"]["n_recon"] == 8 and 0 < hist["vae"]["recon_psnr"] < 60 and -1 <= hist["vae"]["recon_ssim"] <= 1
    assert Image.open(tmp_path / "gen" / "recon.png").size == (
        2 + 8 * 34,
        2 + 2 * 34,
    )  # 8 val originals over their reconstructions
    gen = load_generator(tmp_path / "gen")
    assert gen.unet.config.sample_size == 16 and gen.unet.config.in_channels == 4  # 32 px / 2 (two autoencoder levels)
    scale = gen.vae.config.scaling_factor
    assert scale != 0.18215 and np.isfinite(scale) and scale > 0  # measured on the training latents, not SD's constant

    txt = generate(tmp_path / "gen", data, GenerateConfig(per_class=2, steps=4), tmp_path / "txt")
    assert len(txt) == 4 and {Image.open(p).size for p in txt["path"]} == {(32, 32)}
    again = generate(tmp_path / "gen", data, GenerateConfig(per_class=2, steps=4, batch_size=1), tmp_path / "txt2")
    for a, b in zip(txt["path"], again["path"]):
        assert np.abs(np.asarray(Image.open(a)).astype(int) - np.asarray(Image.open(b))).max() <= 1
    zero = generate(
        tmp_path / "gen", data, GenerateConfig(per_class=2, steps=4, mode="img2img", strength=0.0), tmp_path / "i2i0"
    )
    for path, parent in zip(zero["path"], zero["parent"]):
        np.testing.assert_array_equal(np.asarray(Image.open(path)), load_image(parent, 32))
    half = generate(
        tmp_path / "gen", data, GenerateConfig(per_class=2, steps=4, mode="img2img", strength=0.5), tmp_path / "i2i"
    )
    assert half["parent"].notna().all() and set(half["strength"]) == {0.5}
    assert all(
        not np.array_equal(np.asarray(Image.open(p)), load_image(q, 32)) for p, q in zip(half["path"], half["parent"])
    )


def test_ldm_killed_in_each_phase_resumes_to_identical_weights(data, tmp_path):
    cfg = {**TINY, "vae_steps": 12, "steps": 12}
    finetune(data, LDMConfig(**cfg), tmp_path / "ref", checkpoint_every=4)
    out = tmp_path / "killed"
    args = ["finetune", "--data", str(data), "--out", str(out), "--method", "ldm", "--checkpoint-every", "4"]
    args += [a for k, v in cfg.items() for a in ("--set", f"{k}={json.dumps(v)}")]
    ckpt, kept = out / "train_state.pt", out / "vae" / "phase.json"

    kill9_at(args, "kill@step:6")  # autoencoder step 6 (checkpoint: step 4)
    assert ckpt.exists() and not kept.exists()
    # again: the autoencoder resumes at step 4 (8 steps to its end, then kept, its checkpoint removed), killed at
    # diffusion step 6 (checkpoint: step 4)
    kill9_at(args, "kill@step:14")
    assert kept.exists() and ckpt.exists() and not (out / "config.json").exists()
    assert json.loads(kept.read_text())["history"]["resumed_from_step"] == 4

    finetune(data, LDMConfig(**cfg), out, checkpoint_every=4)
    hist = json.loads((out / "history.json").read_text())
    assert hist["resumed_from_step"] == 4 and not ckpt.exists()
    ref = json.loads((tmp_path / "ref" / "history.json").read_text())
    assert hist["loss"] == ref["loss"] and hist["vae"]["loss"] == ref["vae"]["loss"]
    a, b = _weights(tmp_path / "ref"), _weights(out)
    assert a.keys() == b.keys() and all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)
    assert load_generator(out).vae.config.scaling_factor == load_generator(tmp_path / "ref").vae.config.scaling_factor


def test_ldm_autoencoder_without_mid_attention_trains_saves_and_reloads_without_it(data, tmp_path):
    finetune(data, LDMConfig(**{**TINY, "vae_mid_attention": False, "steps": 2, "vae_steps": 2}), tmp_path / "gen")
    gen = load_generator(tmp_path / "gen")
    assert gen.vae.config.mid_block_add_attention is False
    assert list(gen.vae.encoder.mid_block.attentions) == [None] and list(gen.vae.decoder.mid_block.attentions) == [None]
    assert not any(k.startswith("vae.") and "mid_block.attentions" in k for k in _weights(tmp_path / "gen"))
    out = generate(tmp_path / "gen", data, GenerateConfig(per_class=1, steps=2), tmp_path / "txt")
    assert len(out) == 2 and {Image.open(p).size for p in out["path"]} == {(32, 32)}
