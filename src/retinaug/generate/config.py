"""Configs of the generators (what they train on and how) and of `generate` (what to sample and how).

Training settings live in the method's config (`DDPMConfig`, `LDMConfig`, `SDLoRAConfig`; `GeneratorConfig` names a
method and holds the settings of each), sampling settings (steps, guidance, sampler, mode, strength, precision) in
`GenerateConfig`: a trained generator samples with any of them, so changing one never retrains it. Every field is
defaulted, so each nests in one YAML.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from ..classes import CLASSES, codes_field
from ..fields import MAX_BATCH, MAX_MULTIPLIER, STRICT, Precision, Seed
from ..tracking import TRACKER_HELP, Tracker

Scheduler = Literal["dpm", "ddim", "euler", "pndm"]
# samplers whose noise levels can follow Karras et al.'s sigma spacing (diffusers' use_karras_sigmas)
KARRAS_SAMPLERS = ("dpm", "euler")
Width = Annotated[int, Field(ge=1, le=4096)]  # channels of one UNet/autoencoder level


class _Config(BaseModel):
    model_config = STRICT


class TrainingConfig(_Config):
    """Optimisation settings shared by every generator (AdamW, fixed steps or epochs, accelerate)."""

    train_classes: Literal["all", "synthetic"] | list[str] = Field(
        "all",
        description="What the generator learns from: all (every class of the TRAIN split: anatomy from every image, "
        "class-conditional), synthetic (only the classes the pipeline generates) or a list of codes, e.g. [G, C, A].",
    )
    condition_eye: bool = Field(
        False,
        description="Also condition on the eye side (left/right; a horizontal flip swaps it), so samples can be asked for one side.",
    )
    size: int = Field(32, ge=16, le=1024, description="Training/sampling resolution in pixels.")
    steps: int = Field(1000, ge=1, description="Optimiser steps (ignored when `epochs` is set).")
    epochs: float | None = Field(None, gt=0, description="Passes over the training images; overrides `steps` when set.")
    batch_size: int = Field(16, ge=1, le=MAX_BATCH, description="Images per optimiser micro-batch (per process).")
    grad_accum: int = Field(
        1, ge=1, description="Gradient accumulation steps (effective batch = batch_size x grad_accum x processes)."
    )
    lr: float = Field(2e-3, gt=0, description="AdamW learning rate (after a linear warm-up).")
    warmup_steps: int = Field(20, ge=0, description="Linear learning-rate warm-up steps.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    snr_gamma: float | None = Field(
        None, gt=0, description="Min-SNR-gamma loss weighting (Hang et al. 2023; 5 is their choice); None = plain MSE."
    )
    mixed_precision: Precision = Field(
        "auto",
        description="Training autocast: auto (bf16 where the CPU has bf16 units or the GPU supports it, fp16 on older GPUs, else fp32), no, fp16 (GPU) or bf16.",
    )
    hflip: bool = Field(True, description="Random horizontal flips while training (left/right eyes are mirror images).")
    seed: Seed = Field(0, description="Training seed (initialisation, batches, noise).")
    samples_per_class: int = Field(
        8,
        ge=1,
        le=64,
        description="Images per class in the samples.png grid written after training (sampled with the method's default settings).",
    )
    tracker: Tracker = Field("none", description=TRACKER_HELP)

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data):
        if isinstance(data, dict):
            moved = sorted(set(data) & set(MOVED_TO_GENERATE))
            if moved:
                raise ValueError(
                    "sampling settings are options of `generate` (the pipeline's synthetic: section), not of training: "
                    + ", ".join(f"{k} -> {MOVED_TO_GENERATE[k]}" for k in moved)
                )
            if "classes" in data:
                raise ValueError("`classes` is now `train_classes` (all, synthetic or a list of codes)")
        return data

    @field_validator("train_classes", mode="before")
    @classmethod
    def _train_classes(cls, v):
        if v in ("all", "synthetic"):
            return v
        codes = codes_field(v)
        if codes is None:
            raise ValueError("give all, synthetic or at least one class code")
        return codes


# training-config keys of earlier versions that are now `generate` options
MOVED_TO_GENERATE = {
    "sample_steps": "steps",
    "guidance_scale": "guidance",
    "scheduler": "scheduler",
    "mode": "mode",
    "strength": "strength",
    "negative_prompt": "negative_prompt",
}


class DDPMConfig(TrainingConfig):
    """Class-conditional pixel-space diffusion trained from scratch (diffusers UNet2DModel).

    The defaults are the CPU demo size: 32 px, a 0.6M-parameter UNet, 1000 steps of 16 images."""

    block_out_channels: list[Width] = Field(
        [16, 32, 64], min_length=2, description="UNet width per resolution level (one down block each)."
    )
    layers_per_block: int = Field(1, ge=1, le=16, description="ResNet layers per UNet block.")
    attention_levels: list[int] = Field(
        [], description="Indices of the levels (0 = full resolution) that get self-attention."
    )
    norm_num_groups: int = Field(8, ge=1, description="GroupNorm groups (must divide every block width).")
    num_train_timesteps: int = Field(1000, ge=10, le=10000, description="Diffusion timesteps in training.")
    beta_schedule: Literal["linear", "scaled_linear", "squaredcos_cap_v2"] = Field(
        "squaredcos_cap_v2", description="Noise schedule."
    )
    prediction_type: Literal["epsilon", "v_prediction", "sample"] = Field(
        "v_prediction",
        description="What the UNet predicts (v_prediction: clean samples after short CPU training; sample: smoother, blurrier).",
    )
    class_dropout: float = Field(
        0.1,
        ge=0,
        lt=1,
        description="Probability of replacing the class by the null class (enables classifier-free guidance).",
    )
    ema_decay: float = Field(
        0.999, ge=0, le=1, description="EMA decay of the weights that are saved and sampled; 0 disables EMA."
    )
    ema_warmup: bool = Field(
        True,
        description="EMA warm-up: the decay grows as 1 - (1 + step)^-ema_power up to ema_decay, so early weights fade fast.",
    )
    ema_power: float = Field(2 / 3, gt=0, description="EMA warm-up exponent (2/3 for long runs, 3/4 for short ones).")

    @field_validator("size")
    @classmethod
    def _size(cls, v: int) -> int:
        if not 16 <= v <= 256:
            raise ValueError("ddpm size must be between 16 and 256 px")
        return v

    @model_validator(mode="after")
    def _unet_shape(self):
        check_unet(self.block_out_channels, self.norm_num_groups, self.attention_levels, self.size, "size")
        return self


def check_unet(widths: list[int], groups: int, attention: list[int], size: int, what: str) -> None:
    """A UNet2DModel/AutoencoderKL shape diffusers can build: groups divide every width, the input halves cleanly."""
    if any(w % groups for w in widths):
        raise ValueError(f"norm_num_groups={groups} must divide every width {widths}")
    if size % 2 ** (len(widths) - 1):
        raise ValueError(
            f"{what} {size} must be divisible by 2^(levels-1) = {2 ** (len(widths) - 1)} (levels = len({widths}))"
        )
    if any(not 0 <= i < len(widths) for i in attention):
        raise ValueError(f"attention_levels {attention} must be level indices 0..{len(widths) - 1}")


class LDMConfig(DDPMConfig):
    """Latent diffusion: a small AutoencoderKL trained on the TRAIN images first, then the class-conditional UNet
    of `ddpm` in its latent space (size / 2^(autoencoder levels - 1) pixels per side)."""

    size: int = Field(128, ge=16, le=1024, description="Image resolution in pixels (128 on a CPU, 256 with a GPU).")
    block_out_channels: list[Width] = Field(
        [32, 64, 128], min_length=2, description="Latent UNet width per resolution level."
    )
    vae_block_out_channels: list[Width] = Field(
        [32, 64, 64],
        min_length=1,
        description="Autoencoder width per level; the latents are size / 2^(levels-1) px per side (default 4x smaller).",
    )
    vae_layers_per_block: int = Field(1, ge=1, le=16, description="ResNet layers per autoencoder block.")
    vae_mid_attention: bool = Field(
        True,
        description="Self-attention in the autoencoder's middle block (as Stable Diffusion's VAE); false: an attention-free autoencoder. Its cost grows with the 4th power of the latent side; at 128 px (32 px latents) it is ~3% of a CPU step (BENCHMARKS.md), more at 256 px and up.",
    )
    latent_channels: int = Field(4, ge=1, le=64, description="Channels of the latent space.")
    vae_steps: int = Field(1000, ge=1, description="Autoencoder optimiser steps (ignored when `vae_epochs` is set).")
    vae_epochs: float | None = Field(
        None, gt=0, description="Autoencoder passes over the training images; overrides `vae_steps`."
    )
    vae_batch_size: int = Field(16, ge=1, le=MAX_BATCH, description="Autoencoder images per micro-batch.")
    vae_lr: float = Field(5e-4, gt=0, description="Autoencoder AdamW learning rate.")
    kl_weight: float = Field(
        1e-6,
        ge=0,
        description="Weight of the KL term beside the L1 reconstruction loss (small: a nearly deterministic code).",
    )
    recon_images: int = Field(
        256, ge=1, description="Held-out (val) images on which reconstruction PSNR/SSIM is measured."
    )

    @model_validator(mode="after")
    def _unet_shape(self):
        factor = 2 ** (len(self.vae_block_out_channels) - 1)
        check_unet(self.vae_block_out_channels, self.norm_num_groups, [], self.size, "size")
        check_unet(
            self.block_out_channels,
            self.norm_num_groups,
            self.attention_levels,
            self.size // factor,
            f"latent size (size / {factor})",
        )
        return self


# SDLoRAConfig options that only trade memory for time: none changes the trained LoRA weights (a training checkpoint
# resumes whatever they are); vae_slicing and vae_tiling act on sampling only
SD_MEMORY_OPTIONS = ("gradient_checkpointing", "vae_slicing", "vae_tiling")

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

    base_model: str | None = Field(
        None,
        description="Stable Diffusion 1.x/2.x in diffusers layout (model_index.json, unet, vae, text_encoder, tokenizer, scheduler): a local folder, or a hub id (owner/name) already in the Hugging Face cache; nothing is downloaded.",
    )
    size: int = Field(
        512, ge=16, le=1024, description="Training/sampling resolution in pixels (512 for SD 1.5, 768 for SD 2.1-v)."
    )
    steps: int = Field(500, ge=1, description="Optimiser steps (ignored when `epochs` is set).")
    batch_size: int = Field(1, ge=1, le=MAX_BATCH, description="Images per optimiser micro-batch (per process).")
    grad_accum: int = Field(4, ge=1, description="Gradient accumulation steps.")
    lr: float = Field(1e-4, gt=0, description="AdamW learning rate for the LoRA weights.")
    rank: int = Field(4, ge=1, le=1024, description="LoRA rank.")
    alpha: float = Field(4.0, gt=0, description="LoRA alpha (scale = alpha / rank).")
    train_text_encoder: bool = Field(False, description="Also train LoRA adapters on the CLIP text encoder attention.")
    prompts: dict[str, str] = Field(
        default_factory=lambda: dict(DEFAULT_PROMPTS),
        description="Prompt template per class code; `{name}` expands to the class name; with condition_eye ', left eye' / ', right eye' is appended.",
    )
    prompt_dropout: float = Field(0.0, ge=0, lt=1, description="Probability of training with an empty prompt.")
    samples_per_class: int = Field(
        2, ge=1, le=64, description="Images per class in the samples.png grid written after training."
    )
    # memory options (docs/generators.md): the defaults fit SD 1.5 at 512 px, batch_size 1, on a 24 GB GPU
    gradient_checkpointing: bool = Field(
        False,
        description="Recompute the UNet's activations in the backward pass instead of keeping them (diffusers' "
        "enable_gradient_checkpointing; the text encoder's too with train_text_encoder): a fraction of the activation "
        "memory for about a third more compute per step, the same LoRA weights up to float rounding. Turn it on when a "
        "training step runs out of GPU memory: a GPU under 16 GB, size 768 (SD 2.1-v) or a larger batch_size.",
    )
    vae_slicing: bool = Field(
        True,
        description="Sampling: the VAE decodes (img2img: also encodes) a batch one image at a time (AutoencoderKL.enable_slicing), "
        "so its full-resolution activations are those of one image whatever generate's batch_size; the same images (a pixel "
        "may round one grey level apart, as across batch sizes). Off only to decode whole batches where memory is plentiful.",
    )
    vae_tiling: bool = Field(
        False,
        description="Sampling: images larger than the VAE's own size (its sample_size: 512 px for SD 1.5, 768 for SD 2.1) "
        "are decoded and encoded in overlapping tiles blended at the seams (AutoencoderKL.enable_tiling): the memory of "
        "one tile whatever the size, but the pixels change slightly. No effect at or below that size.",
    )

    @field_validator("prompts")
    @classmethod
    def _prompts(cls, v: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(v) - set(CLASSES))
        if unknown:
            raise ValueError(f"prompts for unknown class code(s): {', '.join(unknown)}")
        return {**DEFAULT_PROMPTS, **v}

    def prompt(self, code: str, eye: str | None = None) -> str:
        text = self.prompts.get(code, "a fundus photograph of a retina with {name}").format(name=CLASSES[code])
        return f"{text}, {eye} eye" if eye in ("left", "right") else text


class GeneratorConfig(_Config):
    """A generator method and the settings of each (only the chosen method's are used): what `finetune` trains."""

    method: Literal["ddpm", "ldm", "sd-lora"] = Field(
        "ddpm",
        description="ddpm (pixel-space, from scratch), ldm (autoencoder + latent diffusion, from scratch) or sd-lora (Stable Diffusion + LoRA, local base model).",
    )
    ddpm: DDPMConfig = Field(default_factory=DDPMConfig, description="Settings when method is ddpm.")
    ldm: LDMConfig = Field(default_factory=LDMConfig, description="Settings when method is ldm.")
    sd_lora: SDLoRAConfig = Field(default_factory=SDLoRAConfig, description="Settings when method is sd-lora.")

    def method_config(self) -> DDPMConfig | LDMConfig | SDLoRAConfig:
        return getattr(self, self.method.replace("-", "_"))


class GenerateConfig(_Config):
    """What to sample (classes, amounts, seed) and how (sampler, steps, guidance, txt2img or img2img, precision).

    None for steps/guidance means the method's own default (ddpm and ldm: 25 steps, guidance 3; sd-lora: 30, 7.5)."""

    per_class: int | None = Field(None, ge=0, le=100_000, description="Images per class (exclusive with ratio).")
    ratio: float | None = Field(
        None, gt=0, le=MAX_MULTIPLIER, description="Images per class relative to its real TRAIN count (x0.5 ... x4)."
    )
    classes: list[str] | None = Field(
        None, description="Classes to generate; None = every class the generator was trained on."
    )
    seed: Seed = Field(0, description="Run seed; each image's seed derives from (seed, class, index).")
    batch_size: int = Field(
        16,
        ge=1,
        le=MAX_BATCH,
        description="Images per sampling batch (same images; CPU kernels may round a pixel by one grey level differently across batch sizes).",
    )
    mode: Literal["txt2img", "img2img"] = Field(
        "txt2img",
        description="txt2img (from noise) or img2img (SDEdit / DA-Fusion: a real TRAIN image of the class, re-noised by `strength`, then denoised).",
    )
    strength: float | list[float] = Field(
        0.5,
        description="img2img: how much of the parent is re-noised, 0 (the parent itself) ... 1 (almost pure noise); a [low, high] range draws one value per image from its seed.",
    )
    steps: int | None = Field(
        None,
        ge=1,
        le=1000,
        description="Sampling steps (img2img runs int(steps x strength) of them); None = the method's default.",
    )
    guidance: float | None = Field(
        None, ge=0, description="Classifier-free guidance scale (1 = none); None = the method's default."
    )
    scheduler: Scheduler = Field("dpm", description="Sampler: dpm (DPM-Solver++ multistep), ddim, euler or pndm.")
    karras: bool = Field(
        False, description="Karras et al.'s noise-level spacing (diffusers use_karras_sigmas; dpm and euler only)."
    )
    precision: Precision = Field(
        "no",
        description="Sampling autocast: no (fp32: the pixels do not depend on batch size, process count or resuming), auto (bf16 on CPUs "
        "with bf16 units and on bf16 GPUs, fp16 on older GPUs, else fp32), bf16 or fp16. Half precision is faster, but a few pixel "
        "levels then depend on which images share a batch.",
    )
    negative_prompt: str | None = Field(None, description="sd-lora only: negative prompt (recorded per image).")

    @field_validator("classes", mode="before")
    @classmethod
    def _classes(cls, v):
        return codes_field(v)

    @field_validator("strength", mode="before")
    @classmethod
    def _strength(cls, v):
        if isinstance(v, str):  # the CLI's --strength 0.3,0.7
            v = [float(p) for p in v.split(",")] if "," in v else float(v)
        values = v if isinstance(v, list) else [v]
        if isinstance(v, list) and (len(v) != 2 or v[0] > v[1]):
            raise ValueError("a strength range is [low, high] with low <= high")
        if any(not 0 <= float(x) <= 1 for x in values):
            raise ValueError("strength must lie in [0, 1]")
        return [float(x) for x in v] if isinstance(v, list) else float(v)

    @model_validator(mode="after")
    def _karras(self):
        if self.karras and self.scheduler not in KARRAS_SAMPLERS:
            raise ValueError(f"karras sigmas need scheduler {' or '.join(KARRAS_SAMPLERS)}, not {self.scheduler}")
        return self

    def sampling(self) -> dict:
        """The call arguments of a generator's sampling pipeline that were set (None: the method decides)."""
        keys = ("steps", "guidance", "scheduler", "karras", "negative_prompt")
        return {k: getattr(self, k) for k in keys if getattr(self, k) is not None}
