"""`ddpm`: class-conditional pixel-space diffusion trained from scratch (needs no pretrained weights).

A diffusers UNet2DModel with one class embedding per class plus a "null" class: the class is dropped
during training with probability `class_dropout`, so sampling can use classifier-free guidance.
EMA weights (diffusers EMAModel) are what gets saved and sampled.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, UNet2DModel
from diffusers.training_utils import EMAModel
from diffusers.utils.torch_utils import randn_tensor

from ..errors import RetinaugError
from .base import Generator, make_sampler, seed_generators, to_uint8
from .config import DDPMConfig
from .registry import register_generator


@register_generator("ddpm")
class DDPMGenerator(Generator):
    config_class = DDPMConfig
    config: DDPMConfig

    def build(self) -> None:
        cfg = self.config
        levels = range(len(cfg.block_out_channels))
        if any(c % cfg.norm_num_groups for c in cfg.block_out_channels):
            raise RetinaugError(f"norm_num_groups={cfg.norm_num_groups} must divide every block_out_channels {cfg.block_out_channels}")
        if cfg.size % 2 ** (len(cfg.block_out_channels) - 1):
            raise RetinaugError(f"size {cfg.size} must be divisible by 2^(levels-1) = {2 ** (len(cfg.block_out_channels) - 1)}")
        self.unet = UNet2DModel(
            sample_size=cfg.size,
            in_channels=3,
            out_channels=3,
            block_out_channels=tuple(cfg.block_out_channels),
            layers_per_block=cfg.layers_per_block,
            down_block_types=tuple("AttnDownBlock2D" if i in cfg.attention_levels else "DownBlock2D" for i in levels),
            up_block_types=tuple("AttnUpBlock2D" if i in cfg.attention_levels else "UpBlock2D" for i in reversed(levels)),
            norm_num_groups=cfg.norm_num_groups,
            attention_head_dim=min(32, cfg.block_out_channels[-1]),
            num_class_embeds=len(self.classes) + 1,  # last index = null class (unconditional)
        )
        self.noise = DDPMScheduler(
            num_train_timesteps=cfg.num_train_timesteps, beta_schedule=cfg.beta_schedule, prediction_type=cfg.prediction_type
        )
        self.unet.to(self.device)
        self.ema = (
            EMAModel(self.unet.parameters(), decay=cfg.ema_decay, use_ema_warmup=True, power=2 / 3)
            if cfg.ema_decay > 0
            else None
        )

    def trainable(self) -> dict[str, torch.nn.Module]:
        return {"unet": self.unet}

    def training_loss(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        b = len(images)
        drop = torch.rand(b, device=images.device) < self.config.class_dropout
        labels = torch.where(drop, torch.full_like(labels, len(self.classes)), labels)
        noise = torch.randn_like(images)
        t = torch.randint(0, self.noise.config.num_train_timesteps, (b,), device=images.device)
        pred = self.unet(self.noise.add_noise(images, noise, t), t, class_labels=labels).sample
        if self.noise.config.prediction_type == "epsilon":
            target = noise
        elif self.noise.config.prediction_type == "v_prediction":
            target = self.noise.get_velocity(images, noise, t)
        else:
            target = images
        return F.mse_loss(pred.float(), target.float())

    def after_step(self) -> None:
        if self.ema is not None:
            self.ema.step(self.unet.parameters())

    def extra_state(self) -> dict:
        return {"ema": self.ema.state_dict()} if self.ema is not None else {}

    def load_extra_state(self, state: dict) -> None:
        if self.ema is not None and "ema" in state:
            self.ema.load_state_dict(state["ema"])
            self.ema.to(self.device)  # the checkpoint is loaded onto the CPU

    def finish_training(self) -> None:
        if self.ema is not None:
            self.ema.copy_to(self.unet.parameters())
        self.unet.eval()

    def save_weights(self, out: Path) -> None:
        self.unet.save_pretrained(out / "unet", safe_serialization=True)
        self.noise.save_pretrained(out / "scheduler")

    def load_weights(self, path: Path) -> None:
        self.unet = UNet2DModel.from_pretrained(path / "unet", local_files_only=True, use_safetensors=True).to(self.device).eval()
        self.noise = DDPMScheduler.from_pretrained(path / "scheduler", local_files_only=True)

    def to(self, device):
        super().to(device)
        if hasattr(self, "unet"):
            self.unet.to(self.device)
        return self

    @torch.no_grad()
    def sample(self, labels: list[str], seeds: list[int], parents: list[str] | None = None) -> np.ndarray:
        cfg = self.config
        sampler = make_sampler(cfg.scheduler, self.noise.config)
        sampler.set_timesteps(cfg.sample_steps, device=self.device)
        y = torch.tensor([self.classes.index(c) for c in labels], device=self.device)
        null = torch.full_like(y, len(self.classes))
        shape = (len(labels), 3, cfg.size, cfg.size)
        x = randn_tensor(shape, generator=seed_generators(seeds), device=self.device) * sampler.init_noise_sigma
        guided = cfg.guidance_scale != 1.0
        for t in sampler.timesteps:
            inp = sampler.scale_model_input(x, t)
            if guided:
                cond, uncond = self.unet(torch.cat([inp, inp]), t, class_labels=torch.cat([y, null])).sample.chunk(2)
                pred = uncond + cfg.guidance_scale * (cond - uncond)
            else:
                pred = self.unet(inp, t, class_labels=y).sample
            x = sampler.step(pred, t, x).prev_sample
        return to_uint8(x)

    def provenance(self, label: str) -> dict:
        cfg = self.config
        return dict(prompt=None, negative_prompt=None, steps=cfg.sample_steps, guidance=cfg.guidance_scale, strength=None)
