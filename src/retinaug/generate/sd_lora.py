"""`sd-lora`: a local Stable Diffusion folder fine-tuned with LoRA adapters (the paper's method).

LoRA (peft) goes on the UNet attention projections, optionally on the CLIP text encoder; the base
weights stay frozen. Adapters are attached and loaded with peft's own API (`inject_adapter_in_model`,
`set_peft_model_state_dict`), never through transformers' optional PEFT integration, whose peft version
demands have run ahead of released peft (transformers 5.24 wants peft >= 0.22). Only the adapters are
saved, in diffusers' `pytorch_lora_weights.safetensors` format (loadable by `pipe.load_lora_weights`
elsewhere), with a config that points at the base folder. Sampling is txt2img (StableDiffusionPipeline) or img2img from a
real TRAIN image of the class (StableDiffusionImg2ImgPipeline made once with `from_pipe`, sharing the weights).

The base is a diffusers-layout SD 1.x/2.x folder (`check_sd_folder` says what else is refused, before anything loads):
fp32 weight files or only `*.fp16.safetensors` variants (loaded into fp32; on a GPU training in fp16/bf16 the fp16
variant is preferred: half the bytes to read, the same weights once cast), `epsilon` or `v_prediction` (SD 2.x-v: the
loss target follows the base scheduler's `prediction_type`). A folder's safety checker (and its feature extractor) is
never loaded: the images are fundus photographs for research, and the checker is an NSFW filter that could only blank
some of them (a false positive), never make one usable.

Memory options (`SDLoRAConfig`): `gradient_checkpointing` for training, `vae_slicing` and `vae_tiling` for sampling; the
defaults fit SD 1.5 at 512 px, batch 1, on a 24 GB GPU.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from diffusers import (
    AutoencoderKL,
    DDPMScheduler,
    StableDiffusionImg2ImgPipeline,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from diffusers.training_utils import cast_training_params
from diffusers.utils import (
    SAFE_WEIGHTS_INDEX_NAME,
    SAFETENSORS_WEIGHTS_NAME,
    _add_variant,
    convert_state_dict_to_diffusers,
    convert_state_dict_to_peft,
    convert_unet_state_dict_to_peft,
)
from peft import LoraConfig, inject_adapter_in_model, set_peft_model_state_dict
from peft.utils import get_peft_model_state_dict
from PIL import Image
from safetensors.torch import load_file
from transformers import CLIPTextModel, CLIPTokenizer
from transformers.utils import SAFE_WEIGHTS_INDEX_NAME as TRANSFORMERS_INDEX_NAME
from transformers.utils import SAFE_WEIGHTS_NAME as TRANSFORMERS_WEIGHTS_NAME
from transformers.utils import logging as transformers_logging

from ..errors import RetinaugError
from ..hardware import autocast, resolve_precision
from ..progress import quiet
from .base import Generator, Nets, Phase, condition_dropout, diffusion_loss
from .checkpoint import training_settings
from .conditioning import Conditions
from .config import SD_MEMORY_OPTIONS, SDLoRAConfig
from .sampling import SamplingPipeline, make_sampler, seed_generators

SD_PARTS = ("model_index.json", "unet", "vae", "text_encoder", "tokenizer", "scheduler")
# model_index.json `_class_name` of SD 1.x/2.x folders: one CLIP text encoder and a UNet2DConditionModel
SD_PIPELINES = ("StableDiffusionPipeline", "StableDiffusionImg2ImgPipeline")
PREDICTION_TYPES = ("epsilon", "v_prediction")
# what from_pretrained reads in a weighted component folder (one file or a sharded index), before the variant name
WEIGHT_FILES = {
    "unet": (SAFETENSORS_WEIGHTS_NAME, SAFE_WEIGHTS_INDEX_NAME),
    "vae": (SAFETENSORS_WEIGHTS_NAME, SAFE_WEIGHTS_INDEX_NAME),
    "text_encoder": (TRANSFORMERS_WEIGHTS_NAME, TRANSFORMERS_INDEX_NAME),
}
VARIANTS = (None, "fp16")  # None: the plain files (fp32 in SD releases)
SINGLE_FILES = ("*.safetensors", "*.ckpt")  # original (CompVis / A1111) checkpoints
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")  # owner/name on the Hugging Face Hub
LORA_WEIGHTS = "pytorch_lora_weights.safetensors"
UNET_TARGETS = ["to_k", "to_q", "to_v", "to_out.0"]
TEXT_ENCODER_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]
# diffusers' saved LoRA key names -> peft's, per module (the UNet and CLIP use different diffusers names)
TO_PEFT = {"unet": convert_unet_state_dict_to_peft, "text_encoder": convert_state_dict_to_peft}
DTYPES = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class SDFolder:
    """A checked SD 1.x/2.x folder and, per weighted component, the safetensors variants it holds."""

    path: Path
    variants: dict[str, frozenset]

    def variant(self, part: str, half: bool) -> str | None:
        """The files to load: the fp16 variant when training in half precision (the weights are cast to it anyway) or
        when it is the only one (then upcast to fp32), else the plain files."""
        have = self.variants[part]
        return "fp16" if "fp16" in have and (half or None not in have) else None


def check_sd_folder(path: str | Path | None) -> SDFolder:
    """Refuse, saying why and what is supported, any base_model but a complete diffusers-layout SD 1.x/2.x folder with
    safetensors weights (a local folder, or a hub id's snapshot in the Hugging Face cache): a single-file checkpoint,
    another family (SDXL, SD3, FLUX, ...: model_index.json's `_class_name`), a prediction type the loss cannot train.
    Reads file names and JSON configs only, so it is also `retinaug run`'s up-front check (checks.py)."""
    if not path:
        raise RetinaugError(
            "sd-lora needs a Stable Diffusion folder: set base_model in the config to a local folder or a hub id in the "
            "Hugging Face cache (e.g. --set base_model=/models/stable-diffusion-v1-5); nothing is downloaded"
        )
    folder = Path(path).expanduser()
    if not folder.exists() and HUB_ID.fullmatch(str(path)):
        folder = _hub_snapshot(str(path))
    if single := _single_file(folder):
        raise RetinaugError(
            f"{single} is a single file, not a Stable Diffusion folder in diffusers layout. A single-file checkpoint must be "
            "converted once, on a machine with internet access (diffusers' from_single_file fetches the model's configs and "
            'CLIP tokenizer from the Hugging Face Hub, so it cannot run offline): python -c "from diffusers import '
            f"StableDiffusionPipeline as P; P.from_single_file('{single.name}').save_pretrained('FOLDER')\" (or diffusers' "
            "scripts/convert_original_stable_diffusion_to_diffusers.py); then set base_model=FOLDER"
        )
    if not folder.is_dir():
        raise RetinaugError(
            f"Stable Diffusion folder {folder} does not exist (base_model: a local folder, or a hub id owner/name in the Hugging Face cache)"
        )
    if (folder / "model_index.json").is_file():
        _check_family(folder)
    missing = [p for p in SD_PARTS if not (folder / p).exists()]
    if missing:
        raise RetinaugError(
            f"{folder} is not a complete Stable Diffusion folder in diffusers layout; missing: {', '.join(missing)}. "
            f"It needs {', '.join(SD_PARTS)} (as written by StableDiffusionPipeline.save_pretrained)"
        )
    prediction = _config(DDPMScheduler, folder, "scheduler").get("prediction_type", "epsilon")
    if prediction not in PREDICTION_TYPES:
        raise RetinaugError(
            f"{folder / 'scheduler'} has prediction_type {prediction!r}; sd-lora trains {' or '.join(PREDICTION_TYPES)} models"
        )
    variants = {
        part: frozenset(v for v in VARIANTS if any((folder / part / _add_variant(name, v)).is_file() for name in names))
        for part, names in WEIGHT_FILES.items()
    }
    if lacking := [part for part, have in variants.items() if not have]:
        raise RetinaugError(
            f"no safetensors weights in {', '.join(str(folder / p) for p in lacking)} (plain or fp16 variant); pickled .bin/.ckpt "
            "weights are refused (a pickle can run code when loaded): convert a folder you trust to safetensors first, e.g. "
            "StableDiffusionPipeline.from_pretrained(FOLDER, use_safetensors=False).save_pretrained(NEW_FOLDER)"
        )
    return SDFolder(folder, variants)


def _hub_snapshot(repo_id: str) -> Path:
    """REPO_ID's snapshot (its `main`) in the Hugging Face cache. Never downloads, online or not, so a run starts from
    the same weights everywhere and the up-front check stays a look at files."""
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except LocalEntryNotFoundError:
        raise RetinaugError(
            f"base_model {repo_id} is neither a local folder nor in the Hugging Face cache ({constants.HF_HUB_CACHE}); "
            "retinaug downloads nothing. Fetch it once where there is internet access, without the pickled and single-file "
            f"copies: hf download {repo_id} --include 'model_index.json' '*/*.json' '*/*.txt' '*/*.safetensors' "
            "--exclude 'safety_checker/*' (then the same base_model works offline), or set base_model to a local folder"
        ) from None


def _single_file(path: Path) -> Path | None:
    """What base_model names when it is no diffusers folder but a single file: the file itself, or a checkpoint at the
    top of a folder without model_index.json (an original-format download)."""
    if path.is_file():
        return path
    if path.is_dir() and not (path / "model_index.json").exists():
        return next((f for pattern in SINGLE_FILES for f in sorted(path.glob(pattern))), None)
    return None


def _check_family(folder: Path) -> None:
    """Only SD 1.x/2.x pipelines: others (SDXL's two text encoders, SD3's and FLUX's transformers) need other training."""
    kind = _config(StableDiffusionPipeline, folder).get("_class_name")
    if kind not in SD_PIPELINES:
        raise RetinaugError(
            f"{folder} holds a {kind or 'pipeline without _class_name'} (model_index.json), which sd-lora cannot fine-tune: "
            f"it supports Stable Diffusion 1.x and 2.x folders ({' or '.join(SD_PIPELINES)}: one CLIP text encoder, a "
            "UNet2DConditionModel, e.g. stable-diffusion-v1-5 or stable-diffusion-2-1); SDXL, SD3, FLUX and other families "
            "are not supported"
        )


def _config(cls, folder: Path, subfolder: str | None = None) -> dict:
    """A JSON config as diffusers reads it (model_index.json for a pipeline class); an unreadable one is a RetinaugError."""
    try:
        return cls.load_config(folder, subfolder=subfolder, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise RetinaugError(f"cannot read the {cls.config_name} of {folder / (subfolder or '')}: {exc}") from None


class SDLoRAGenerator(Generator):
    name = "sd-lora"
    config_class = SDLoRAConfig
    config: SDLoRAConfig

    @property
    def dtype(self) -> torch.dtype:
        return (
            DTYPES[resolve_precision(self.config.mixed_precision, self.device)]
            if self.device.type == "cuda"
            else torch.float32
        )

    @property
    def _cast(self) -> dict:
        """`.to()` arguments: cast only for half precision (diffusers warns about needless casts)."""
        return {"dtype": self.dtype} if self.dtype != torch.float32 else {}

    def check(self) -> None:
        check_sd_folder(self.config.base_model)

    def _load_base(self) -> None:
        base = check_sd_folder(self.config.base_model)
        half = self.dtype != torch.float32
        if quiet():
            transformers_logging.disable_progress_bar()
        self.tokenizer = CLIPTokenizer.from_pretrained(base.path, subfolder="tokenizer", local_files_only=True)

        def weights(part: str) -> dict:
            """safetensors only (a pickled .bin can run code when loaded), in fp32 whatever the files (`to()` casts later)."""
            return dict(
                subfolder=part,
                variant=base.variant(part, half),
                dtype=torch.float32,
                use_safetensors=True,
                local_files_only=True,
            )

        try:
            self.text_encoder = CLIPTextModel.from_pretrained(base.path, **weights("text_encoder"))
            self.vae = AutoencoderKL.from_pretrained(base.path, **weights("vae"))
            self.unet = UNet2DConditionModel.from_pretrained(base.path, **weights("unet"))
        except (OSError, ValueError) as exc:
            raise RetinaugError(f"cannot load the Stable Diffusion weights in {base.path} ({exc})") from None
        # the base model's own schedule: prediction_type (epsilon or v_prediction) comes from here. Latents are not in
        # [-1, 1], so samplers made from it must never clip (SD 1.5's PNDM config has no clip_sample; DDPM's default is True)
        self.noise = DDPMScheduler.from_pretrained(
            base.path, subfolder="scheduler", local_files_only=True, clip_sample=False
        )
        for m in (self.text_encoder, self.vae, self.unet):
            m.requires_grad_(False)

    def _lora(self, target_modules: list[str]) -> LoraConfig:
        cfg = self.config
        return LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, init_lora_weights="gaussian", target_modules=target_modules)

    def _attach_lora(self) -> None:
        """Fresh LoRA adapters on the frozen base (diffusers' `add_adapter` calls peft directly)."""
        self.unet.add_adapter(self._lora(UNET_TARGETS))
        if self.config.train_text_encoder:
            inject_adapter_in_model(self._lora(TEXT_ENCODER_TARGETS), self.text_encoder)

    def _checkpoint_activations(self) -> None:
        """Gradient checkpointing on the networks that are trained through: their activations are recomputed in the
        backward pass instead of kept (diffusers' UNet; transformers 5 names the text encoder's `activation_checkpointing`)."""
        self.unet.enable_gradient_checkpointing()
        if self.config.train_text_encoder:
            self.text_encoder.activation_checkpointing_enable()

    def build(self) -> None:
        self._load_base()
        self._attach_lora()
        if self.config.gradient_checkpointing:
            self._checkpoint_activations()
        for m in (self.text_encoder, self.vae, self.unet):
            m.to(self.device, **self._cast)
        cast_training_params([self.unet, self.text_encoder], dtype=torch.float32)  # LoRA weights train in fp32
        prompts = [self.config.prompt(c, eye) for c, eye in self.conditions.entries()] + [
            ""
        ]  # the null condition: no prompt
        self.prompt_ids = self._tokenize(prompts).to(self.device)
        self.vae_scale = self.vae.config.scaling_factor

    def _tokenize(self, prompts: list[str]) -> torch.Tensor:
        tok = self.tokenizer
        return tok(
            prompts, padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt"
        ).input_ids

    def trainable(self) -> dict[str, torch.nn.Module]:
        return (
            {"unet": self.unet, "text_encoder": self.text_encoder}
            if self.config.train_text_encoder
            else {"unet": self.unet}
        )

    def phases(self) -> list[Phase]:
        cfg = self.config
        return [
            Phase(
                "lora",
                self.trainable(),
                self._loss,
                training_settings(cfg, SD_MEMORY_OPTIONS),
                steps=cfg.steps,
                epochs=cfg.epochs,
                batch_size=cfg.batch_size,
                lr=cfg.lr,
            )
        ]

    def _loss(self, nets: Nets, idx: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
        images = self.data.pixels(idx, flip, self.device)
        with torch.no_grad():
            latents = self.vae.encode(images.to(self.dtype)).latent_dist.sample() * self.vae_scale
        cond = condition_dropout(
            self.data.condition(idx, flip, self.device), self.config.prompt_dropout, self.conditions.null
        )
        context = nets.get("text_encoder", self.text_encoder)(self.prompt_ids[cond])[0]  # trained or frozen
        noise = torch.randn_like(latents)
        t = torch.randint(0, self.noise.config.num_train_timesteps, (len(latents),), device=latents.device)
        pred = nets["unet"](self.noise.add_noise(latents, noise, t), t, context).sample
        return diffusion_loss(pred, latents, noise, t, self.noise, self.config.snr_gamma)

    def save_weights(self, out: Path) -> None:
        te = self.text_encoder if self.config.train_text_encoder else None
        StableDiffusionPipeline.save_lora_weights(
            out,
            unet_lora_layers=convert_state_dict_to_diffusers(get_peft_model_state_dict(self.unet)),
            text_encoder_lora_layers=convert_state_dict_to_diffusers(get_peft_model_state_dict(te)) if te else None,
            weight_name=LORA_WEIGHTS,
            safe_serialization=True,
        )

    def load_weights(self, path: Path) -> None:
        if not (path / LORA_WEIGHTS).is_file():
            raise RetinaugError(f"{path} has no {LORA_WEIGHTS}; re-run `retinaug finetune --method sd-lora`")
        self._load_base()
        self._attach_lora()
        weights = load_file(path / LORA_WEIGHTS)
        for name, module in self.trainable().items():
            part = {k.removeprefix(f"{name}."): v for k, v in weights.items() if k.startswith(f"{name}.")}
            result = set_peft_model_state_dict(module, TO_PEFT[name](part))
            missing = [k for k in result.missing_keys if "lora_" in k]
            if not part or missing or result.unexpected_keys:
                raise RetinaugError(
                    f"{path / LORA_WEIGHTS} does not fit the {name} of {self.config.base_model} ({len(part)} tensors, "
                    f"{len(missing)} LoRA weights missing, {len(result.unexpected_keys)} unexpected); re-run `retinaug finetune`"
                )
        self.to(self.device)

    def to(self, device):
        super().to(device)
        for name in ("text_encoder", "vae", "unet"):
            if hasattr(self, name):
                getattr(self, name).to(self.device, **self._cast)
        return self

    def pipeline(self) -> SDPipeline:
        vae, cfg = self.vae, self.config  # the memory options live on the VAE (diffusers 0.42 dropped the pipeline's)
        (vae.enable_slicing if cfg.vae_slicing else vae.disable_slicing)()
        (vae.enable_tiling if cfg.vae_tiling else vae.disable_tiling)()
        txt2img = StableDiffusionPipeline(
            vae=vae,
            text_encoder=self.text_encoder,
            tokenizer=self.tokenizer,
            unet=self.unet,
            scheduler=self.noise,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
        return SDPipeline(txt2img, self.conditions, self.config.size, self.config.prompt, self.dtype)


class SDPipeline(SamplingPipeline):
    """Stable Diffusion txt2img and img2img over the same (LoRA-carrying) components: the img2img pipeline is made
    once with `from_pipe`, which shares the weights."""

    def __init__(
        self,
        txt2img: StableDiffusionPipeline,
        conditions: Conditions,
        size: int,
        prompt: Callable[[str, str | None], str],
        dtype: torch.dtype,
    ):
        txt2img.set_progress_bar_config(disable=True)
        self.txt2img = txt2img
        self.img2img = StableDiffusionImg2ImgPipeline.from_pipe(txt2img, dtype=dtype)  # default: cast to fp32
        self.img2img.set_progress_bar_config(disable=True)
        self.conditions, self.size, self._prompt = conditions, size, prompt
        self.schedule = txt2img.scheduler.config  # the base model's training noise schedule

    def prompt(self, label: str, eye: str | None) -> str:
        return self._prompt(label, eye if self.conditions.eyes else None)

    @torch.no_grad()
    def __call__(
        self,
        labels: Sequence[str],
        seeds: Sequence[int],
        parents: Sequence[str] | None = None,
        strengths: Sequence[float] | float | None = None,
        eyes: Sequence[str] | None = None,
        steps: int = 30,
        guidance: float = 7.5,
        scheduler: str = "dpm",
        karras: bool = False,
        precision: str = "no",
        negative_prompt: str | None = None,
    ) -> np.ndarray:
        self.conditions.index(labels, eyes)  # refuses unknown classes / missing eye sides
        sides = list(eyes) if eyes is not None else [None] * len(labels)
        device = self.txt2img.device

        def denoise(idx: list[int], depth: int, parent_pixels: np.ndarray | None) -> np.ndarray:
            pipe = self.txt2img if parent_pixels is None else self.img2img
            pipe.scheduler = make_sampler(scheduler, self.schedule, karras)
            args = dict(
                prompt=[self.prompt(labels[k], sides[k]) for k in idx],
                negative_prompt=[negative_prompt] * len(idx) if negative_prompt else None,
                num_inference_steps=steps,
                guidance_scale=guidance,
                generator=seed_generators([seeds[k] for k in idx]),
                output_type="np",
            )
            with autocast(precision, device):
                if parent_pixels is None:
                    images = pipe(height=self.size, width=self.size, **args).images
                else:  # a strength whose int(steps x strength) is `depth`, exactly
                    init = [Image.fromarray(p) for p in parent_pixels]
                    images = pipe(image=init, strength=min(1.0, (depth + 0.5) / steps), **args).images
            return (np.clip(images, 0, 1) * 255).round().astype(np.uint8)

        return self._run(labels, seeds, parents, strengths, steps, denoise)
