"""Generator test helpers, built locally from diffusers' and transformers' own classes with random weights (nothing
is downloaded): a tiny Stable Diffusion folder for the sd-lora tests; folders with the layouts real releases ship
(SD 1.5 as released, an fp16-only export, SD 2.x v-prediction, SDXL) and a single-file checkpoint, at scaled-down
widths; a one-thread fixture for tiny models."""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path

import pytest

CLIP_VOCAB = 49408  # SD 1.x/2.x tokenizers: 256 bytes, 256 word-final bytes, 48,894 merges, 2 special tokens
CLIP_POSITIONS = 77


def _byte_chars() -> list[str]:
    """CLIP's byte -> unicode table (every byte has a printable stand-in character)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


def write_tiny_tokenizer(folder: Path) -> Path:
    """A CLIP BPE tokenizer with a character-level vocabulary (+ a few merges) in vocab.json + merges.txt."""
    from transformers import CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    chars = _byte_chars()
    merges = [("t", "h"), ("th", "e</w>"), ("a", "n"), ("i", "n"), ("o", "f</w>")]
    tokens = ["<|startoftext|>", "<|endoftext|>"] + chars + [c + "</w>" for c in chars] + ["".join(m) for m in merges]
    vocab = {t: i for i, t in enumerate(dict.fromkeys(tokens))}
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
    tok = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=77)
    tok.save_pretrained(folder)
    return folder


def write_clip_tokenizer(folder: Path, pad_token: str = "<|endoftext|>") -> Path:
    """A tokenizer folder as SD releases ship it (vocab.json, merges.txt, tokenizer_config.json, special_tokens_map.json;
    no tokenizer.json) with CLIP's size and order: bytes, word-final bytes, merges (generated two-character ones), then
    <|startoftext|> 49406 and <|endoftext|> 49407. SD 2's OpenCLIP tokenizer pads with "!"."""
    chars = _byte_chars()
    units = chars + [c + "</w>" for c in chars]
    merges = list(itertools.islice(itertools.product(chars, units), CLIP_VOCAB - len(units) - 2))
    tokens = units + [a + b for a, b in merges] + ["<|startoftext|>", "<|endoftext|>"]
    special = {
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "pad_token": pad_token,
    }
    config = {
        **special,
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": CLIP_POSITIONS,
        "do_lower_case": True,
        "errors": "replace",
        "add_prefix_space": False,
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(f"{a} {b}" for a, b in merges) + "\n")
    (folder / "special_tokens_map.json").write_text(json.dumps(special))
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return folder


# SD 1.5's real shapes (the unet/, vae/ and text_encoder/ configs of stable-diffusion-v1-5), which the builders below
# scale down unless given these: 860 M UNet parameters, 84 M in the VAE, 123 M in the text encoder
SD15_UNET = dict(
    block_out_channels=(320, 640, 1280, 1280),
    layers_per_block=2,
    cross_attention_dim=768,
    attention_head_dim=8,
    norm_num_groups=32,
    sample_size=64,
    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
)
SD15_VAE = dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2, norm_num_groups=32, scaling_factor=0.18215)
SD15_TEXT = dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12)


def tiny_unet(cross_attention_dim: int = 32, sample_size: int = 16, **config):
    """SD's UNet2DConditionModel at two levels of 16/32 channels (SD: four, 320-1280); `config` overrides any shape."""
    from diffusers import UNet2DConditionModel

    tiny = dict(
        block_out_channels=(16, 32),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=8,
        norm_num_groups=8,
    )
    return UNet2DConditionModel(
        **{**tiny, "cross_attention_dim": cross_attention_dim, "sample_size": sample_size, **config},
        in_channels=4,
        out_channels=4,
    )


def tiny_vae(levels: int = 2, sample_size: int = 32, **config):
    """SD's AutoencoderKL at 16-32 channels; `levels` 4 downsamples 8x as SD's does (latents 1/8 of the image side);
    `config` overrides any shape."""
    from diffusers import AutoencoderKL

    tiny = dict(block_out_channels=(16, 32, 32, 32)[:levels], norm_num_groups=8, sample_size=sample_size)
    return AutoencoderKL(
        **{**tiny, **config},
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        down_block_types=("DownEncoderBlock2D",) * levels,
        up_block_types=("UpDecoderBlock2D",) * levels,
    )


def tiny_clip_text(tokenizer, hidden_size: int = 32, with_projection: bool = False, **config):
    """A 2-layer CLIP text encoder sized to `tokenizer` (vocabulary, positions); `config` overrides any setting."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    cls = CLIPTextModelWithProjection if with_projection else CLIPTextModel
    tiny = dict(intermediate_size=37, num_attention_heads=4, num_hidden_layers=2)
    return cls(
        CLIPTextConfig(
            **{**tiny, **config},
            hidden_size=hidden_size,
            vocab_size=len(tokenizer),
            max_position_embeddings=tokenizer.model_max_length,
        )
    )


def make_tiny_sd(folder: Path, prediction_type: str = "epsilon", seed: int = 0) -> Path:
    """Save a random tiny StableDiffusionPipeline (UNet 2 levels, VAE x2 downsampling, 2-layer CLIP) to `folder`."""
    import torch
    from diffusers import DDIMScheduler, StableDiffusionPipeline
    from transformers import CLIPTokenizer

    torch.manual_seed(seed)
    tokenizer = CLIPTokenizer.from_pretrained(write_tiny_tokenizer(folder.parent / f".{folder.name}-tokenizer"))
    unet, vae = tiny_unet(), tiny_vae()
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        prediction_type=prediction_type,
    )
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=tiny_clip_text(tokenizer, bos_token_id=0, eos_token_id=1, pad_token_id=1),
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder


# --- the layouts of real releases, at tiny widths -------------------------------------------------------------------

# the noise schedule every SD 1.x/2.x/XL release ships (their scheduler_config.json)
SD_SCHEDULE = dict(
    beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000, steps_offset=1
)


def tiny_safety_checker():
    """SD 1.5's NSFW checker (a CLIP vision tower + concept embeddings) and its image processor, at 32 px."""
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig, CLIPImageProcessor

    vision = dict(
        hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=1, image_size=32, patch_size=8
    )
    processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    return StableDiffusionSafetyChecker(CLIPConfig(vision_config=vision, projection_dim=32)), processor


def save_release(pipe, folder: Path, tokenizers: dict[str, Path], fp32: bool = True) -> Path:
    """`save_pretrained` as releases ship: fp32 weights with `*.fp16.safetensors` variants beside them (the configs are
    the fp32 save's), or with fp32=False the fp16 variant files alone; each tokenizer folder as written by
    `write_clip_tokenizer` (releases have no tokenizer.json)."""
    import torch

    if fp32:
        pipe.save_pretrained(folder)
        scratch = folder.parent / f".{folder.name}-fp16"
        pipe.to(torch.float16).save_pretrained(scratch, variant="fp16")
        for f in scratch.rglob("*.fp16.safetensors"):
            f.rename(folder / f.relative_to(scratch))
        shutil.rmtree(scratch)
    else:
        pipe.to(torch.float16).save_pretrained(folder, variant="fp16")
    for name, source in tokenizers.items():
        shutil.rmtree(folder / name)
        shutil.copytree(source, folder / name)
    for weights in folder.glob("text_encoder*/*.safetensors"):
        with_transformers4_names(weights)
    return folder


def with_transformers4_names(weights: Path) -> None:
    """Releases were saved by transformers 4, whose CLIP text encoder keys start with `text_model.`; transformers >= 5.6
    saves CLIPTextModel's flattened (and reads both): rewrite a file with the names releases carry."""
    from safetensors.torch import load_file, save_file

    tensors = load_file(weights)
    save_file(
        {k if k.startswith(("text_model.", "text_projection.")) else f"text_model.{k}": v for k, v in tensors.items()},
        weights,
        metadata={"format": "pt"},
    )


def make_sd_release(
    folder: Path, version: str = "1.5", fp32: bool = True, seed: int = 0, real_size: bool = False
) -> Path:
    """A Stable Diffusion folder with the layout of runwayml/stable-diffusion-v1-5 (version "1.5": model_index.json with a
    saved safety_checker and feature_extractor, PNDM scheduler, epsilon) or stabilityai/stable-diffusion-2-1 ("2.1":
    safety_checker [null, null], DDIM scheduler with v_prediction, 768 px (UNet sample_size 96), an OpenCLIP-style text
    encoder (gelu, wider, pad "!")): CLIP tokenizer of 49,408 tokens and 77 positions, a VAE downsampling 8x, fp32 weights
    with fp16 variants beside them (fp32=False: the fp16 variants only). `real_size` (1.5 only) gives SD 1.5's real shapes
    (SD15_UNET, SD15_VAE, SD15_TEXT: a 6 GB folder with the fp16 variants, for benchmarks/sd_real_size.py)."""
    import torch
    from diffusers import DDIMScheduler, PNDMScheduler, StableDiffusionPipeline
    from transformers import CLIPImageProcessor, CLIPTokenizer

    v2 = version == "2.1"
    if real_size and v2:
        raise ValueError("real_size builds SD 1.5 only")
    torch.manual_seed(seed)
    tok_dir = write_clip_tokenizer(
        folder.parent / f".{folder.name}-tokenizer", pad_token="!" if v2 else "<|endoftext|>"
    )
    tokenizer = CLIPTokenizer.from_pretrained(tok_dir)
    text = dict(
        hidden_size=64 if v2 else 32,  # SD 2's OpenCLIP-H is wider than SD 1's CLIP-L (1024 vs 768)
        hidden_act="gelu" if v2 else "quick_gelu",
        bos_token_id=0,
        eos_token_id=2,
        pad_token_id=1,
    )  # both releases' ids
    text = {**text, **(SD15_TEXT if real_size else {})}
    text_encoder = tiny_clip_text(tokenizer, **text)
    unet = tiny_unet(
        **{
            "cross_attention_dim": text["hidden_size"],
            "sample_size": 96 if v2 else 64,
            "use_linear_projection": v2,
            **(SD15_UNET if real_size else {}),
        }
    )
    vae = tiny_vae(levels=4, **{"sample_size": 768 if v2 else 512, **(SD15_VAE if real_size else {})})
    if v2:
        scheduler = DDIMScheduler(
            **SD_SCHEDULE, set_alpha_to_one=False, clip_sample=False, prediction_type="v_prediction"
        )
        checker, processor = None, CLIPImageProcessor()
    else:
        scheduler = PNDMScheduler(**SD_SCHEDULE, set_alpha_to_one=False, skip_prk_steps=True)
        checker, processor = tiny_safety_checker()
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=checker,
        feature_extractor=processor,
        requires_safety_checker=not v2,
    )
    return save_release(pipe, folder, {"tokenizer": tok_dir}, fp32)


def make_sdxl(folder: Path, seed: int = 0) -> Path:
    """A StableDiffusionXLPipeline folder (stabilityai/stable-diffusion-xl-base-1.0's layout): two text encoders and
    tokenizers (text_encoder_2 with a projection, tokenizer_2 padding with "!"), a UNet with SDXL's size/crop embedding."""
    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline
    from transformers import CLIPTokenizer

    torch.manual_seed(seed)
    tok_dirs = {
        "tokenizer": write_clip_tokenizer(folder.parent / f".{folder.name}-tokenizer"),
        "tokenizer_2": write_clip_tokenizer(folder.parent / f".{folder.name}-tokenizer_2", pad_token="!"),
    }
    tokenizer, tokenizer_2 = (CLIPTokenizer.from_pretrained(d) for d in tok_dirs.values())
    unet = tiny_unet(
        cross_attention_dim=64,
        sample_size=128,
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=6 * 8 + 32,
    )  # 6 size/crop numbers + pooled text
    pipe = StableDiffusionXLPipeline(
        vae=tiny_vae(levels=4, sample_size=1024),
        text_encoder=tiny_clip_text(tokenizer),
        text_encoder_2=tiny_clip_text(tokenizer_2, with_projection=True, projection_dim=32),
        tokenizer=tokenizer,
        tokenizer_2=tokenizer_2,
        unet=unet,
        scheduler=EulerDiscreteScheduler(**SD_SCHEDULE),
    )
    return save_release(pipe, folder, tok_dirs)


def make_single_file(sd_folder: Path, file: Path) -> Path:
    """One .safetensors holding a `make_sd_release` folder's UNet, VAE and text encoder under the top-level prefixes of
    the original (CompVis) checkpoints that `from_single_file` reads: `model.diffusion_model.`, `first_stage_model.`,
    `cond_stage_model.transformer.`. The text encoder's keys are exactly SD 1's (its CLIP is stored verbatim), and
    diffusers' `infer_diffusers_model_type` sees an SD 1 checkpoint; the UNet and VAE keep diffusers' sub-keys (the
    reverse conversion is a diffusers script outside the package): enough for a test of a layout refusal."""
    from safetensors.torch import load_file, save_file

    prefixes = {
        "unet/diffusion_pytorch_model.safetensors": "model.diffusion_model.",
        "vae/diffusion_pytorch_model.safetensors": "first_stage_model.",
        "text_encoder/model.safetensors": "cond_stage_model.transformer.",
    }
    tensors = {prefix + k: v for part, prefix in prefixes.items() for k, v in load_file(sd_folder / part).items()}
    file.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, file)
    return file


@pytest.fixture(scope="module", autouse=False)
def single_thread():
    """Tiny models run as fast on one thread, and two OpenMP threads stall badly on a busy shared CPU."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
