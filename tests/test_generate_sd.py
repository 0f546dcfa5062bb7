"""sd-lora on a tiny random Stable Diffusion built in the test: refuse incomplete folders, fine-tune, save,
reload, txt2img and img2img with per-image prompts; v_prediction models train and sample too."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from conftest import kill9_at, make_dataset
from peft.utils import get_peft_model_state_dict
from PIL import Image
from safetensors.torch import load_file
from tiny_sd import make_tiny_sd, single_thread  # noqa: F401  (fixture)
from typer.testing import CliRunner

from retinaug.cache import load_image
from retinaug.cli import app
from retinaug.errors import RetinaugError
from retinaug.generate import GenerateConfig, SDLoRAConfig, finetune, generate, load_generator

pytestmark = pytest.mark.usefixtures("single_thread")

TINY = {
    "size": 32,
    "steps": 3,
    "batch_size": 2,
    "grad_accum": 2,
    "warmup_steps": 0,
    "lr": 5e-3,
    "samples_per_class": 1,
    "prompts": {"G": "a fundus photo with glaucoma"},
}


TINY_PROMPT_C = "a fundus photograph of an eye with cataract, blurry hazy view of the retina"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("sd") / "data", classes=("G", "C"), patients_per_class=4).attrs[
        "manifest_dir"
    ]


@pytest.fixture(scope="module")
def sd_folder(tmp_path_factory):
    return make_tiny_sd(tmp_path_factory.mktemp("sd-base") / "tiny-sd")


def test_refuses_incomplete_model_folder(sd_folder, data, tmp_path):
    broken = tmp_path / "broken-sd"
    shutil.copytree(sd_folder, broken)
    shutil.rmtree(broken / "vae")
    (broken / "model_index.json").unlink()
    runner = CliRunner()
    result = runner.invoke(
        app,
        [
            "finetune",
            "--data",
            data,
            "--out",
            str(tmp_path / "g"),
            "--method",
            "sd-lora",
            "--set",
            f"base_model={broken}",
        ],
    )
    assert result.exit_code == 1
    assert "missing: model_index.json, vae" in " ".join(result.output.replace("│", " ").split())
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)
    result = runner.invoke(app, ["finetune", "--data", data, "--out", str(tmp_path / "g"), "--method", "sd-lora"])
    assert result.exit_code == 1 and "base_model" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "g").exists()


def test_sd_lora_finetune_reload_txt2img_img2img(sd_folder, data, tmp_path):
    meta = finetune(data, SDLoRAConfig(**TINY, base_model=str(sd_folder), train_text_encoder=True), tmp_path / "gen")
    assert meta["method"] == "sd-lora" and meta["config"]["base_model"] == str(sd_folder)
    assert meta["n_train_images"] == 8  # 2 of 4 patients per class are TRAIN, 2 eyes each
    lora = load_file(tmp_path / "gen" / "pytorch_lora_weights.safetensors")
    for part in ("unet.", "text_encoder."):  # peft starts every up (B) matrix at zero: trained ones are not
        up = [v for k, v in lora.items() if k.startswith(part) and k.endswith("up.weight")]
        assert len(up) >= 4 and all(v.abs().max() > 0 for v in up), part
    assert (tmp_path / "gen" / "samples.png").is_file()
    card = (tmp_path / "gen" / "README.md").read_text()  # the model card names the base model, not this machine's path
    assert f"fine-tuned from the base model `{sd_folder.name}`" in card and "pipeline_tag: text-to-image" in card
    assert str(sd_folder) not in card and "| G | glaucoma | 4 | 2 |" in card

    gen = load_generator(tmp_path / "gen")  # reload from disk: base folder + LoRA file, no network
    assert gen.classes == ["G", "C"] and gen.noise.config.prediction_type == "epsilon"
    loaded = get_peft_model_state_dict(gen.text_encoder)  # every saved text-encoder tensor is back in place
    assert len(loaded) == sum(k.startswith("text_encoder.") for k in lora)
    assert all(v.abs().max() > 0 for k, v in loaded.items() if "lora_B" in k)
    ids = gen._tokenize(["a fundus photo with glaucoma"])
    pipe = gen.pipeline()
    assert (
        pipe.img2img.unet is pipe.txt2img.unet and pipe.img2img.text_encoder is pipe.txt2img.text_encoder
    )  # from_pipe shares
    with_lora, context = pipe(["G"], [7], steps=3), gen.text_encoder(ids)[0]
    pipe.txt2img.disable_lora()
    assert with_lora.shape == (1, 32, 32, 3) and not np.array_equal(with_lora, pipe(["G"], [7], steps=3))
    assert not torch.allclose(context, gen.text_encoder(ids)[0])  # the text encoder's LoRA is live

    txt = generate(
        tmp_path / "gen",
        data,
        GenerateConfig(per_class=2, batch_size=3, seed=1, steps=3, negative_prompt="blurry, text"),
        tmp_path / "txt",
    )
    assert len(txt) == 4 and txt["parent"].isna().all() and txt["strength"].isna().all()
    assert set(txt.loc[txt["label"] == "G", "prompt"]) == {"a fundus photo with glaucoma"}
    assert set(txt.loc[txt["label"] == "C", "prompt"]) == {meta["config"]["prompts"]["C"]}
    assert (
        set(txt["negative_prompt"]) == {"blurry, text"} and set(txt["steps"]) == {3} and set(txt["guidance"]) == {7.5}
    )

    img = generate(
        tmp_path / "gen",
        data,
        GenerateConfig(per_class=2, seed=1, steps=3, mode="img2img", strength=0.6),
        tmp_path / "img",
    )
    train = set(data_train_paths(data))
    assert set(img["parent"]) <= train and img["parent"].notna().all()
    assert set(img["strength"]) == {0.6}
    a, b = (np.asarray(Image.open(p)) for p in (txt["path"].iloc[0], img["path"].iloc[0]))
    assert a.shape == b.shape == (32, 32, 3) and not np.array_equal(a, b)
    assert not np.array_equal(b, load_image(img["parent"].iloc[0], 32))
    with pytest.raises(RetinaugError, match="different sampling"):
        generate(
            tmp_path / "gen",
            data,
            GenerateConfig(per_class=2, seed=1, steps=3, mode="img2img", strength=0.3),
            tmp_path / "img",
        )
    same = generate(
        tmp_path / "gen",
        data,
        GenerateConfig(per_class=2, seed=1, steps=3, mode="img2img", strength=0.0),
        tmp_path / "img0",
    )
    for path, parent in zip(same["path"], same["parent"]):  # strength 0: the parent, untouched
        np.testing.assert_array_equal(np.asarray(Image.open(path)), load_image(parent, 32))


def data_train_paths(data):
    from retinaug.manifest import load_manifest

    df = load_manifest(data)
    return df.loc[df["split"] == "train", "path"]


def test_v_prediction_model_with_min_snr_and_the_eye_in_the_prompt(data, tmp_path):
    base = make_tiny_sd(tmp_path / "tiny-sd-v", prediction_type="v_prediction")
    cfg = {**TINY, "base_model": str(base), "steps": 2, "train_classes": ["C"], "snr_gamma": 5.0, "condition_eye": True}
    finetune(data, SDLoRAConfig(**cfg), tmp_path / "gen")
    history = json.loads((tmp_path / "gen" / "history.json").read_text())
    assert np.isfinite(history["loss"]).all()
    gen = load_generator(tmp_path / "gen")
    assert gen.noise.config.prediction_type == "v_prediction"
    out = generate(tmp_path / "gen", data, GenerateConfig(per_class=2, scheduler="ddim", steps=3), tmp_path / "syn")
    assert list(out["label"]) == ["C", "C"] and list(out["eye"]) == ["left", "right"]
    assert list(out["prompt"]) == [f"{TINY_PROMPT_C}, left eye", f"{TINY_PROMPT_C}, right eye"]


def test_pickled_sd_weights_are_refused(tmp_path, tiny_data):
    """A base model whose UNet ships only a pickled .bin is refused with a clear error, never unpickled."""
    base = make_tiny_sd(tmp_path / "tiny-sd")
    for f in (base / "unet").glob("*.safetensors"):
        f.unlink()
    (base / "unet" / "diffusion_pytorch_model.bin").write_bytes(b"a pickle would run code here")
    with pytest.raises(RetinaugError, match="pickled .bin/.ckpt weights are refused"):
        finetune(
            tiny_data.attrs["manifest_dir"],
            SDLoRAConfig(**{**TINY, "base_model": str(base), "steps": 1}),
            tmp_path / "gen",
        )


def test_sd_lora_killed_mid_training_resumes_to_identical_lora(sd_folder, data, tmp_path):
    """The checkpoint holds only the trainable (LoRA) tensors; resuming gives the uninterrupted run's LoRA exactly."""
    import torch
    import yaml

    cfg = {**TINY, "base_model": str(sd_folder), "steps": 9, "samples_per_class": 1}
    finetune(data, SDLoRAConfig(**cfg), tmp_path / "ref", checkpoint_every=3)
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    out = tmp_path / "killed"
    kill9_at(
        [
            "finetune",
            "--data",
            str(data),
            "--out",
            str(out),
            "--method",
            "sd-lora",
            "--config",
            str(tmp_path / "cfg.yaml"),
            "--checkpoint-every",
            "3",
        ],
        "kill@step:5",
    )  # checkpoint: step 3
    assert (out / "train_state.pt").exists() and not (out / "config.json").exists()
    state = torch.load(out / "train_state.pt", map_location="cpu", weights_only=True)
    assert state["modules"]["unet"] and all("lora" in k for k in state["modules"]["unet"])

    finetune(data, SDLoRAConfig(**cfg), out, checkpoint_every=3)
    assert json.loads((out / "history.json").read_text())["resumed_from_step"] == 3
    a, b = (
        load_file(tmp_path / "ref" / "pytorch_lora_weights.safetensors"),
        load_file(out / "pytorch_lora_weights.safetensors"),
    )
    assert a.keys() == b.keys() and all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)
