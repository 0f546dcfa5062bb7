"""`sd-lora`: a local Stable Diffusion folder fine-tuned with LoRA adapters (the paper's method).

LoRA (peft) goes on the UNet attention projections, optionally on the CLIP text encoder; the base
weights stay frozen. Adapters are attached and loaded with peft's own API (`inject_adapter_in_model`,
`set_peft_model_state_dict`), never through transformers' optional PEFT integration, whose peft version
demands have run ahead of released peft (transformers 5.24 wants peft >= 0.22). Only the adapters are
saved, in diffusers' `pytorch_lora_weights.safetensors` format (loadable by `pipe.load_lora_weights`
elsewhere), with a config that points at the base folder. Sampling is txt2img (StableDiffusionPipeline) or img2img from a
real TRAIN image of the class (StableDiffusionImg2ImgPipeline made once with `from_pipe`, sharing the weights).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
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
from diffusers.utils import convert_state_dict_to_diffusers, convert_state_dict_to_peft, convert_unet_state_dict_to_peft
from peft import LoraConfig, inject_adapter_in_model, set_peft_model_state_dict
from peft.utils import get_peft_model_state_dict
from PIL import Image
from safetensors.torch import load_file
from transformers import CLIPTextModel, CLIPTokenizer
from transformers.utils import logging as transformers_logging

from ..errors import RetinaugError
from ..hardware import autocast, resolve_precision
from ..progress import quiet
from .base import Generator, Phase, condition_dropout, diffusion_loss, training_settings
from .conditioning import Conditions
from .config import SDLoRAConfig
from .registry import register_generator
from .sampling import SamplingPipeline, make_sampler, seed_generators

SD_PARTS = ("model_index.json", "unet", "vae", "text_encoder", "tokenizer", "scheduler")
LORA_WEIGHTS = "pytorch_lora_weights.safetensors"
UNET_TARGETS = ["to_k", "to_q", "to_v", "to_out.0"]
TEXT_ENCODER_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]
# diffusers' saved LoRA key names -> peft's, per module (the UNet and CLIP use different diffusers names)
TO_PEFT = {"unet": convert_unet_state_dict_to_peft, "text_encoder": convert_state_dict_to_peft}
DTYPES = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def check_sd_folder(path: str | Path | None) -> Path:
    """Refuse anything but a complete local diffusers-layout Stable Diffusion folder, naming what is missing."""
    if not path:
        raise RetinaugError(
            "sd-lora needs a local Stable Diffusion folder: set base_model in the config "
            "(e.g. --set base_model=/models/stable-diffusion-v1-5); nothing is downloaded"
        )
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise RetinaugError(f"Stable Diffusion folder {folder} does not exist (base_model must be a local folder)")
    missing = [p for p in SD_PARTS if not (folder / p).exists()]
    if missing:
        raise RetinaugError(
            f"{folder} is not a complete Stable Diffusion folder in diffusers layout; missing: {', '.join(missing)}. "
            f"It needs {', '.join(SD_PARTS)} (as written by StableDiffusionPipeline.save_pretrained)"
        )
    return folder


@register_generator("sd-lora")
class SDLoRAGenerator(Generator):
    config_class = SDLoRAConfig
    config: SDLoRAConfig

    @property
    def dtype(self) -> torch.dtype:
        return DTYPES[resolve_precision(self.config.mixed_precision, self.device)] if self.device.type == "cuda" else torch.float32

    @property
    def _cast(self) -> dict:
        """`.to()` arguments: cast only for half precision (diffusers warns about needless casts)."""
        return {"dtype": self.dtype} if self.dtype != torch.float32 else {}

    def check(self) -> None:
        check_sd_folder(self.config.base_model)

    def _load_base(self) -> None:
        base = check_sd_folder(self.config.base_model)
        load = dict(local_files_only=True)
        if quiet():
            transformers_logging.disable_progress_bar()
        self.tokenizer = CLIPTokenizer.from_pretrained(base, subfolder="tokenizer", **load)
        try:  # safetensors only: a pickled .bin can run code when loaded
            weights = dict(load, use_safetensors=True)
            self.text_encoder = CLIPTextModel.from_pretrained(base, subfolder="text_encoder", **weights)
            self.vae = AutoencoderKL.from_pretrained(base, subfolder="vae", **weights)
            self.unet = UNet2DConditionModel.from_pretrained(base, subfolder="unet", **weights)
        except (OSError, ValueError) as exc:
            raise RetinaugError(
                f"cannot load the Stable Diffusion weights in {base} as safetensors ({exc}); pickled .bin/.ckpt "
                "weights are refused: convert the folder to safetensors first"
            ) from None
        # the base model's own schedule: prediction_type (epsilon or v_prediction) comes from here
        self.noise = DDPMScheduler.from_pretrained(base, subfolder="scheduler", **load)
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

    def build(self) -> None:
        self._load_base()
        self._attach_lora()
        for m in (self.text_encoder, self.vae, self.unet):
            m.to(self.device, **self._cast)
        cast_training_params([self.unet, self.text_encoder], dtype=torch.float32)  # LoRA weights train in fp32
        prompts = [self.config.prompt(c, eye) for c, eye in self.conditions.entries()] + [""]  # the null condition: no prompt
        self.prompt_ids = self._tokenize(prompts).to(self.device)
        self.vae_scale = self.vae.config.scaling_factor

    def _tokenize(self, prompts: list[str]) -> torch.Tensor:
        tok = self.tokenizer
        return tok(prompts, padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt").input_ids

    def trainable(self) -> dict[str, torch.nn.Module]:
        return {"unet": self.unet, "text_encoder": self.text_encoder} if self.config.train_text_encoder else {"unet": self.unet}

    def phases(self) -> list[Phase]:
        cfg = self.config
        return [Phase("lora", self.trainable(), self._loss, training_settings(cfg), steps=cfg.steps, epochs=cfg.epochs,
                      batch_size=cfg.batch_size, lr=cfg.lr, warmup_steps=cfg.warmup_steps, weight_decay=cfg.weight_decay)]

    def _loss(self, idx: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
        images = self.data.pixels(idx, flip, self.device)
        with torch.no_grad():
            latents = self.vae.encode(images.to(self.dtype)).latent_dist.sample() * self.vae_scale
        cond = condition_dropout(self.data.condition(idx, flip, self.device), self.config.prompt_dropout, self.conditions.null)
        context = self.text_encoder(self.prompt_ids[cond])[0]
        noise = torch.randn_like(latents)
        t = torch.randint(0, self.noise.config.num_train_timesteps, (len(latents),), device=latents.device)
        pred = self.unet(self.noise.add_noise(latents, noise, t), t, context).sample
        if self.noise.config.prediction_type not in ("epsilon", "v_prediction"):
            raise RetinaugError(f"unsupported prediction_type {self.noise.config.prediction_type!r} in the base scheduler")
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
        txt2img = StableDiffusionPipeline(
            vae=self.vae,
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

    def __init__(self, txt2img: StableDiffusionPipeline, conditions: Conditions, size: int, prompt: Callable[[str, str | None], str], dtype: torch.dtype):
        txt2img.set_progress_bar_config(disable=True)
        self.txt2img = txt2img
        self.img2img = StableDiffusionImg2ImgPipeline.from_pipe(txt2img, torch_dtype=dtype)  # default: cast to fp32
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
