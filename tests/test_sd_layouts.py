"""sd-lora on the folder layouts real Stable Diffusion releases ship (issue 30), built by tiny_sd.py at tiny widths:
SD 1.5 as released (safety checker, fp16 variants beside fp32, a 49,408-token CLIP tokenizer), an fp16-only export, SD 2.1
(v-prediction, OpenCLIP-style text encoder padding with "!") are fine-tuned and sampled; SDXL, SD3, FLUX, single-file
checkpoints and untrainable schedules are refused with a message, also by `retinaug run` before any stage starts. A hub id
resolves to its snapshot in the Hugging Face cache, offline, and is never downloaded."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import torch.nn.functional as F
from conftest import make_dataset, write_hub_snapshot
from safetensors.torch import load_file
from test_generate_sd import TINY
from tiny_sd import CLIP_VOCAB, make_sd_release, make_sdxl, make_single_file, single_thread  # noqa: F401  (fixture)
from typer.testing import CliRunner

from retinaug.cli import app
from retinaug.errors import RetinaugError
from retinaug.generate import GenerateConfig, SDLoRAConfig, create_generator, finetune, generate, load_generator
from retinaug.generate.base import diffusion_loss
from retinaug.generate.sd_lora import check_sd_folder

pytestmark = pytest.mark.usefixtures("single_thread")
UNET_FP32, UNET_FP16 = "unet/diffusion_pytorch_model.safetensors", "unet/diffusion_pytorch_model.fp16.safetensors"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("sd") / "data", classes=("G", "C"), patients_per_class=4).attrs[
        "manifest_dir"
    ]


@pytest.fixture(scope="module")
def sd15(tmp_path_factory):
    return make_sd_release(tmp_path_factory.mktemp("sd15") / "stable-diffusion-v1-5")


@pytest.fixture(scope="module")
def sd15_fp16(tmp_path_factory):
    return make_sd_release(tmp_path_factory.mktemp("sd15-fp16") / "stable-diffusion-v1-5-fp16", fp32=False)


@pytest.fixture(scope="module")
def sd21(tmp_path_factory):
    return make_sd_release(tmp_path_factory.mktemp("sd21") / "stable-diffusion-2-1", version="2.1")


@pytest.fixture(scope="module")
def sdxl(tmp_path_factory):
    return make_sdxl(tmp_path_factory.mktemp("sdxl") / "stable-diffusion-xl-base-1.0")


def train_and_sample(base, data, out, **config):
    """Two LoRA steps on `base`, the generator reloaded from disk, one image sampled: what proves a layout works."""
    finetune(data, SDLoRAConfig(**{**TINY, "base_model": str(base), "steps": 2, **config}), out / "gen")
    assert (
        len(
            generate(
                out / "gen", data, GenerateConfig(per_class=1, classes=["G"], steps=2, scheduler="ddim"), out / "syn"
            )
        )
        == 1
    )
    return load_generator(out / "gen")


def base_weights(gen) -> set[torch.dtype]:
    """The dtypes of the frozen base networks' weights (LoRA aside, they are what was read from the folder)."""
    return {p.dtype for m in (gen.unet, gen.vae, gen.text_encoder) for p in m.parameters()}


def test_sd15_release_trains_and_samples_without_its_safety_checker(sd15, data, tmp_path):
    """The folder as released: model_index.json lists safety_checker and feature_extractor, fp16 variants and (here
    unreadable) pickles lie beside the fp32 safetensors. The checker is never loaded: its weights are garbage here."""
    base = shutil.copytree(sd15, tmp_path / "stable-diffusion-v1-5")
    assert json.loads((base / "model_index.json").read_text())["safety_checker"] == [
        "stable_diffusion",
        "StableDiffusionSafetyChecker",
    ]
    for f in (base / "safety_checker").glob("*.safetensors"):
        f.write_bytes(b"not a safetensors file: loading the checker would fail")
    (base / "unet" / "diffusion_pytorch_model.bin").write_bytes(b"a pickle would run code here")

    gen = train_and_sample(base, data, tmp_path)
    assert gen.noise.config.clip_sample is False  # the PNDM config has none, and SD latents are not in [-1, 1]
    pipe = gen.pipeline().txt2img
    assert pipe.safety_checker is None and pipe.feature_extractor is None
    assert len(gen.tokenizer) == CLIP_VOCAB and gen.tokenizer.model_max_length == 77
    assert (
        gen._tokenize(["a fundus photo"])[0, -1] == gen.tokenizer.eos_token_id == 49407
    )  # SD 1 pads with <|endoftext|>
    assert base_weights(gen) == {torch.float32}  # on the CPU: the fp32 files, not the fp16 variant
    assert torch.equal(gen.unet.conv_in.weight, load_file(base / UNET_FP32)["conv_in.weight"])


def test_fp16_only_folder_loads_upcast_to_fp32_on_cpu(sd15_fp16, data, tmp_path):
    assert all(".fp16." in f.name for f in sd15_fp16.rglob("*.safetensors"))
    assert check_sd_folder(sd15_fp16).variants == {
        part: frozenset({"fp16"}) for part in ("unet", "vae", "text_encoder")
    }
    gen = train_and_sample(sd15_fp16, data, tmp_path)
    assert base_weights(gen) == {torch.float32}
    assert torch.equal(gen.unet.conv_in.weight, load_file(sd15_fp16 / UNET_FP16)["conv_in.weight"].float())
    token_embedding = load_file(sd15_fp16 / "text_encoder" / "model.fp16.safetensors")[
        "text_model.embeddings.token_embedding.weight"
    ]
    assert torch.equal(gen.text_encoder.get_input_embeddings().weight, token_embedding.float())


@pytest.mark.parametrize("precision, variant", [("no", None), ("fp16", "fp16"), ("bf16", "fp16")])
def test_a_gpu_training_in_half_precision_reads_the_fp16_variant(sd15, precision, variant):
    """Mixed precision fp16/bf16 casts the frozen base to half anyway: the fp16 files are half the bytes. The loader's
    choice depends on the device the generator trains on (here named only: nothing is moved there)."""
    gen = create_generator("sd-lora", {"base_model": str(sd15), "mixed_precision": precision})
    gen.device = torch.device("cuda")
    gen._load_base()
    unet = load_file(sd15 / (UNET_FP16 if variant else UNET_FP32))["conv_in.weight"].float()
    assert gen.unet.conv_in.weight.dtype == torch.float32 and torch.equal(gen.unet.conv_in.weight, unet)


def test_sd21_v_prediction_trains_on_the_velocity(sd21, data, tmp_path):
    assert json.loads((sd21 / "unet" / "config.json").read_text())["sample_size"] * 8 == 768
    gen = train_and_sample(sd21, data, tmp_path, train_text_encoder=True)
    assert gen.noise.config.prediction_type == "v_prediction"  # from the folder's DDIMScheduler config
    assert gen._tokenize(["a fundus photo"])[0, -1] == gen.tokenizer.pad_token_id == 0  # OpenCLIP pads with "!"
    torch.manual_seed(0)
    clean, noise, t = torch.randn(2, 4, 4, 4), torch.randn(2, 4, 4, 4), torch.tensor([10, 900])
    velocity = gen.noise.get_velocity(clean, noise, t)
    assert diffusion_loss(velocity, clean, noise, t, gen.noise, None) == 0  # the target is the velocity ...
    assert (
        diffusion_loss(noise, clean, noise, t, gen.noise, None) == F.mse_loss(noise, velocity) > 0
    )  # ... not the noise


def only_model_index(folder, class_name: str, **components):
    """A folder with just the model_index.json of another family (enough to be refused)."""
    folder.mkdir()
    (folder / "model_index.json").write_text(json.dumps({"_class_name": class_name, **components}))
    return folder


@pytest.mark.parametrize(
    "layout, said",
    [
        ("sdxl", ["holds a StableDiffusionXLPipeline", "supports Stable Diffusion 1.x and 2.x", "SDXL, SD3, FLUX"]),
        ("sd3", ["holds a StableDiffusion3Pipeline", "supports Stable Diffusion 1.x and 2.x"]),
        ("flux", ["holds a FluxPipeline", "supports Stable Diffusion 1.x and 2.x"]),
        (
            "single file",
            [
                "v1-5-pruned-emaonly.safetensors is a single file",
                "cannot run offline",
                "P.from_single_file('v1-5-pruned-emaonly.safetensors').save_pretrained('FOLDER')",
            ],
        ),
        ("folder of a single file", ["v1-5-pruned-emaonly.safetensors is a single file", "then set base_model=FOLDER"]),
        ("sample prediction", ["has prediction_type 'sample'; sd-lora trains epsilon or v_prediction models"]),
    ],
)
def test_unsupported_layouts_are_refused_with_what_is_supported(layout, said, sd15, sdxl, tmp_path):
    if layout == "sdxl":
        base = sdxl
    elif layout == "sd3":
        base = only_model_index(
            tmp_path / "sd3",
            "StableDiffusion3Pipeline",
            transformer=["diffusers", "SD3Transformer2DModel"],
            text_encoder_3=["transformers", "T5EncoderModel"],
        )
    elif layout == "flux":
        base = only_model_index(tmp_path / "flux", "FluxPipeline", transformer=["diffusers", "FluxTransformer2DModel"])
    elif layout == "sample prediction":
        base = shutil.copytree(sd15, tmp_path / "sd", ignore=shutil.ignore_patterns("*.safetensors"))
        schedule = base / "scheduler" / "scheduler_config.json"
        schedule.write_text(json.dumps({**json.loads(schedule.read_text()), "prediction_type": "sample"}))
    else:
        base = make_single_file(sd15, tmp_path / "downloads" / "v1-5-pruned-emaonly.safetensors")
        base = base.parent if layout == "folder of a single file" else base
    with pytest.raises(RetinaugError) as refused:
        create_generator("sd-lora", {"base_model": str(base)}).check()
    assert all(text in str(refused.value) for text in said), str(refused.value)


def test_finetune_and_run_refuse_sdxl_before_anything_starts(sdxl, data, tmp_path):
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
            f"base_model={sdxl}",
        ],
    )
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit) and "Traceback" not in result.output
    assert (
        "StableDiffusionXLPipeline" in " ".join(result.output.replace("│", " ").split())
        and not (tmp_path / "g").exists()
    )
    run = tmp_path / "run"
    result = runner.invoke(
        app,
        [
            "run",
            "--preset",
            "demo",
            "--dry-run",
            "--out",
            str(run),
            "--set",
            "generator.method=sd-lora",
            "--set",
            f"generator.sd_lora.base_model={sdxl}",
        ],
    )
    output = " ".join(result.output.replace("│", " ").split())
    assert result.exit_code == 1 and "the config cannot run (nothing was started)" in output, output
    assert "generator: " in output and "holds a StableDiffusionXLPipeline" in output
    assert not run.exists() or not [p for p in run.iterdir() if p.is_dir()]


def test_a_hub_id_in_the_hugging_face_cache_trains_offline_and_one_not_there_says_how_to_fetch_it(
    sd15, data, tmp_path, monkeypatch
):
    from huggingface_hub import constants

    assert constants.HF_HUB_OFFLINE  # the suite runs offline (conftest): nothing may be downloaded
    repo = "stable-diffusion-v1-5/stable-diffusion-v1-5"
    files = {str(f.relative_to(sd15)): f.read_bytes() for f in sd15.rglob("*") if f.is_file()}
    snapshot = write_hub_snapshot(tmp_path / "hub", repo, files)
    monkeypatch.setattr(
        constants, "HF_HUB_CACHE", str(tmp_path / "hub")
    )  # huggingface_hub reads the variable at import
    monkeypatch.chdir(tmp_path)  # no local folder of that name
    assert check_sd_folder(repo).path == snapshot
    gen = train_and_sample(repo, data, tmp_path)
    assert gen.config.base_model == repo and (tmp_path / "gen" / "pytorch_lora_weights.safetensors").is_file()

    with pytest.raises(RetinaugError) as missing:
        check_sd_folder("someone/not-cached")
    said = str(missing.value)
    assert (
        "someone/not-cached is neither a local folder nor in the Hugging Face cache" in said
        and str(tmp_path / "hub") in said
    )
    assert "hf download someone/not-cached --include" in said and "retinaug downloads nothing" in said
    assert not (tmp_path / "hub" / "models--someone--not-cached").exists()
