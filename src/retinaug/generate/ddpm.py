"""`ddpm`: class-conditional pixel-space diffusion trained from scratch (needs no pretrained weights).

A diffusers UNet2DModel with one class embedding per condition (class, or class x eye side) plus a null
condition: it is dropped in training with probability `class_dropout`, so sampling can use classifier-free
guidance. EMA weights (diffusers EMAModel) are what gets saved and sampled.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import DDPMScheduler, UNet2DModel
from diffusers.training_utils import EMAModel

from .base import Generator, Nets, Phase, condition_dropout, diffusion_loss
from .checkpoint import training_settings
from .config import DDPMConfig
from .sampling import ClassDiffusionPipeline


class DDPMGenerator(Generator):
    name = "ddpm"
    config_class = DDPMConfig
    config: DDPMConfig

    def _unet(self, channels: int, size: int) -> UNet2DModel:
        cfg = self.config
        levels = range(len(cfg.block_out_channels))
        return UNet2DModel(
            sample_size=size,
            in_channels=channels,
            out_channels=channels,
            block_out_channels=tuple(cfg.block_out_channels),
            layers_per_block=cfg.layers_per_block,
            down_block_types=tuple("AttnDownBlock2D" if i in cfg.attention_levels else "DownBlock2D" for i in levels),
            up_block_types=tuple(
                "AttnUpBlock2D" if i in cfg.attention_levels else "UpBlock2D" for i in reversed(levels)
            ),
            norm_num_groups=cfg.norm_num_groups,
            attention_head_dim=min(32, cfg.block_out_channels[-1]),
            num_class_embeds=self.conditions.null + 1,  # the last index is the null condition (unconditional)
        ).to(self.device)

    def _noise(self) -> DDPMScheduler:
        cfg = self.config
        return DDPMScheduler(
            num_train_timesteps=cfg.num_train_timesteps,
            beta_schedule=cfg.beta_schedule,
            prediction_type=cfg.prediction_type,
        )

    def build(self) -> None:
        self.unet = self._unet(3, self.config.size)
        self.noise = self._noise()

    def phases(self) -> list[Phase]:
        return [self.diffusion_phase(training_settings(self.config))]

    def diffusion_phase(self, settings: dict, start=None) -> Phase:
        """The UNet's phase (pixels here; ldm's latents reuse it through `clean_batch`)."""
        cfg = self.config
        ema = (
            EMAModel(self.unet.parameters(), decay=cfg.ema_decay, use_ema_warmup=cfg.ema_warmup, power=cfg.ema_power)
            if cfg.ema_decay > 0
            else None
        )
        return Phase(
            "diffusion",
            {"unet": self.unet},
            self._diffusion_loss,
            settings,
            steps=cfg.steps,
            epochs=cfg.epochs,
            batch_size=cfg.batch_size,
            lr=cfg.lr,
            ema=ema,
            start=start,
        )

    def clean_batch(self, idx: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
        """What the UNet learns to denoise, for a batch of training images."""
        return self.data.pixels(idx, flip, self.device)

    def _diffusion_loss(self, nets: Nets, idx: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
        x = self.clean_batch(idx, flip)
        cond = condition_dropout(
            self.data.condition(idx, flip, self.device), self.config.class_dropout, self.conditions.null
        )
        noise = torch.randn_like(x)
        t = torch.randint(0, self.noise.config.num_train_timesteps, (len(x),), device=x.device)
        pred = nets["unet"](self.noise.add_noise(x, noise, t), t, class_labels=cond).sample
        return diffusion_loss(pred, x, noise, t, self.noise, self.config.snr_gamma)

    def save_weights(self, out: Path) -> None:
        self.unet.save_pretrained(out / "unet", safe_serialization=True)
        self.noise.save_pretrained(out / "scheduler")

    def load_weights(self, path: Path) -> None:
        self.unet = (
            UNet2DModel.from_pretrained(path / "unet", local_files_only=True, use_safetensors=True)
            .to(self.device)
            .eval()
        )
        self.noise = DDPMScheduler.from_pretrained(path / "scheduler", local_files_only=True)

    def to(self, device):
        super().to(device)
        for name in ("unet", "vae"):
            if hasattr(self, name):
                getattr(self, name).to(self.device)
        return self

    def pipeline(self) -> ClassDiffusionPipeline:
        return ClassDiffusionPipeline(self.unet, self.noise, self.conditions, self.config.size)
