"""Configs of the two generators and of the `generate` loop (pydantic, every field defaulted, nestable in one YAML)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..classes import CLASSES, parse_classes
from ..tracking import TRACKER_HELP, Tracker

Scheduler = Literal["dpm", "ddim", "euler", "pndm"]
MixedPrecision = Literal["auto", "no", "fp16", "bf16"]


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @field_validator("classes", mode="before", check_fields=False)
    @classmethod
    def _codes(cls, v):
        if v is None or v == "" or v == []:
            return None
        return list(parse_classes(v if isinstance(v, str) else ",".join(v)))


class TrainingConfig(_Config):
    """Optimisation settings shared by both generators (AdamW, fixed steps or epochs, accelerate)."""

    classes: list[str] | None = Field(None, description="Classes to train on (codes, e.g. [G, C, A]); None = every class in the train split.")
    size: int = Field(32, ge=16, le=1024, description="Training/sampling resolution in pixels.")
    steps: int = Field(1000, ge=1, description="Optimiser steps (ignored when `epochs` is set).")
    epochs: float | None = Field(None, gt=0, description="Passes over the training images; overrides `steps` when set.")
    batch_size: int = Field(16, ge=1, description="Images per optimiser micro-batch (per process).")
    grad_accum: int = Field(1, ge=1, description="Gradient accumulation steps (effective batch = batch_size x grad_accum x processes).")
    lr: float = Field(2e-3, gt=0, description="AdamW learning rate (after a linear warm-up).")
    warmup_steps: int = Field(20, ge=0, description="Linear learning-rate warm-up steps.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    mixed_precision: MixedPrecision = Field("auto", description="Training autocast: auto (bf16 where the CPU has bf16 units or the GPU supports it, fp16 on older GPUs, else fp32), no, fp16 (GPU) or bf16.")
    hflip: bool = Field(True, description="Random horizontal flips while training (left/right eyes are mirror images).")
    seed: int = Field(0, description="Training seed (initialisation, batches, noise).")
    scheduler: Scheduler = Field("dpm", description="Sampler: dpm (DPM-Solver++ multistep), ddim, euler or pndm.")
    sample_steps: int = Field(25, ge=1, le=1000, description="Sampling steps.")
    guidance_scale: float = Field(3.0, ge=0, description="Classifier-free guidance scale at sampling (1 = no guidance).")
    samples_per_class: int = Field(8, ge=1, le=64, description="Images per class in the samples.png grid written after training.")
    tracker: Tracker = Field("none", description=TRACKER_HELP)


class DDPMConfig(TrainingConfig):
    """Class-conditional pixel-space diffusion trained from scratch (diffusers UNet2DModel).

    The defaults are the CPU demo size: 32 px, a 0.6M-parameter UNet, 1000 steps of 16 images."""

    block_out_channels: list[int] = Field([16, 32, 64], min_length=2, description="UNet width per resolution level (one down block each).")
    layers_per_block: int = Field(1, ge=1, description="ResNet layers per UNet block.")
    attention_levels: list[int] = Field([], description="Indices of the levels (0 = full resolution) that get self-attention.")
    norm_num_groups: int = Field(8, ge=1, description="GroupNorm groups (must divide every block width).")
    num_train_timesteps: int = Field(1000, ge=10, description="Diffusion timesteps in training.")
    beta_schedule: Literal["linear", "scaled_linear", "squaredcos_cap_v2"] = Field("squaredcos_cap_v2", description="Noise schedule.")
    prediction_type: Literal["epsilon", "v_prediction", "sample"] = Field("v_prediction", description="What the UNet predicts (v_prediction: clean samples after short CPU training; sample: smoother, blurrier).")
    class_dropout: float = Field(0.1, ge=0, lt=1, description="Probability of replacing the class by the null class (enables classifier-free guidance).")
    ema_decay: float = Field(0.999, ge=0, le=1, description="EMA decay (with warm-up); 0 disables EMA.")

    @field_validator("size")
    @classmethod
    def _size(cls, v: int) -> int:
        if not 16 <= v <= 256:
            raise ValueError("ddpm size must be between 16 and 256 px")
        return v


DEFAULT_PROMPTS: dict[str, str] = {
    "N": "a fundus photograph of a healthy normal retina",
    "D": "a fundus photograph of a retina with diabetic retinopathy, microaneurysms, hemorrhages and hard exudates",
    "G": "a fundus photograph of a retina with glaucoma, enlarged optic cup",
    "C": "a fundus photograph of an eye with cataract, blurry hazy view of the retina",
    "A": "a fundus photograph of a retina with age-related macular degeneration, drusen in the macula",
    "H": "a fundus photograph of a retina with hypertensive retinopathy, narrowed tortuous arteries",
    "M": "a fundus photograph of a retina with pathological myopia, peripapillary atrophy, tessellated fundus",
    "O": "a fundus photograph of a retina with an ocular abnormality",
}


class SDLoRAConfig(TrainingConfig):
    """Stable Diffusion (local diffusers folder) fine-tuned with LoRA adapters (peft)."""

    base_model: str | None = Field(None, description="Local Stable Diffusion folder in diffusers layout (model_index.json, unet, vae, text_encoder, tokenizer, scheduler).")
    size: int = Field(512, ge=16, le=1024, description="Training/sampling resolution in pixels (512 for SD 1.5, 768 for SD 2.1-v).")
    steps: int = Field(500, ge=1, description="Optimiser steps (ignored when `epochs` is set).")
    batch_size: int = Field(1, ge=1, description="Images per optimiser micro-batch (per process).")
    grad_accum: int = Field(4, ge=1, description="Gradient accumulation steps.")
    lr: float = Field(1e-4, gt=0, description="AdamW learning rate for the LoRA weights.")
    rank: int = Field(4, ge=1, description="LoRA rank.")
    alpha: float = Field(4.0, gt=0, description="LoRA alpha (scale = alpha / rank).")
    train_text_encoder: bool = Field(False, description="Also train LoRA adapters on the CLIP text encoder attention.")
    prompts: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_PROMPTS), description="Prompt template per class code; `{name}` expands to the class name.")
    negative_prompt: str = Field("", description="Negative prompt used at sampling (recorded per image).")
    prompt_dropout: float = Field(0.0, ge=0, lt=1, description="Probability of training with an empty prompt.")
    guidance_scale: float = Field(7.5, ge=0, description="Classifier-free guidance scale at sampling.")
    sample_steps: int = Field(30, ge=1, le=1000, description="Sampling steps.")
    mode: Literal["txt2img", "img2img"] = Field("txt2img", description="txt2img, or img2img from real TRAIN images of the class (DA-Fusion style).")
    strength: float = Field(0.5, gt=0, le=1, description="img2img strength (how much of the real parent is re-noised).")
    samples_per_class: int = Field(2, ge=1, le=64, description="Images per class in the samples.png grid written after training.")

    @field_validator("prompts")
    @classmethod
    def _prompts(cls, v: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(v) - set(CLASSES))
        if unknown:
            raise ValueError(f"prompts for unknown class code(s): {', '.join(unknown)}")
        return {**DEFAULT_PROMPTS, **v}

    def prompt(self, code: str) -> str:
        return self.prompts.get(code, "a fundus photograph of a retina with {name}").format(name=CLASSES[code])


class GenerateConfig(_Config):
    """How many synthetic images to make and with which sampling settings (None = the generator's own)."""

    per_class: int | None = Field(None, ge=0, description="Images per class (exclusive with ratio).")
    ratio: float | None = Field(None, gt=0, description="Images per class relative to its real TRAIN count (x0.5 ... x4).")
    classes: list[str] | None = Field(None, description="Classes to generate; None = every class the generator was trained on.")
    seed: int = Field(0, description="Run seed; each image's seed derives from (seed, class, index).")
    batch_size: int = Field(16, ge=1, description="Images per sampling batch (does not change the output).")
    steps: int | None = Field(None, ge=1, description="Sampling steps override.")
    guidance: float | None = Field(None, ge=0, description="Guidance scale override.")
    scheduler: Scheduler | None = Field(None, description="Sampler override.")
    mode: Literal["txt2img", "img2img"] | None = Field(None, description="sd-lora only: txt2img or img2img override.")
    strength: float | None = Field(None, gt=0, le=1, description="sd-lora img2img strength override.")
