"""Sampling pipelines: a trained generator's networks plus a sampler, with the sampling settings as call arguments.

    pipe = generator.pipeline()
    images = pipe(["G", "C"], seeds=[1, 2], steps=25, guidance=3.0)                       # txt2img
    images = pipe(["G", "C"], seeds=[1, 2], parents=[p1, p2], strengths=[0.3, 0.6])      # img2img

Each call returns (B, S, S, 3) uint8 images; image k depends on its label, seed, parent, strength and eye
and the settings only, never on the rest of its batch. img2img is SDEdit (Meng et al. 2022) as diffusers'
img2img pipelines do it: with `steps` sampling steps and strength s, the parent is noised to the level at
which int(steps x s) steps remain and only those are run; zero remaining steps return the parent unchanged.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence

import numpy as np
import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler, PNDMScheduler, UNet2DModel
from diffusers.utils.torch_utils import randn_tensor

from ..cache import load_image
from ..errors import RetinaugError
from ..hardware import autocast
from .conditioning import Conditions
from .config import KARRAS_SAMPLERS

SAMPLERS = {
    "dpm": DPMSolverMultistepScheduler,
    "ddim": DDIMScheduler,
    "euler": EulerDiscreteScheduler,
    "pndm": PNDMScheduler,
}
# per-image arguments of a pipeline call; every other keyword argument is a sampling setting
PER_IMAGE = ("labels", "seeds", "parents", "strengths", "eyes")


def make_sampler(name: str, train_scheduler_config, karras: bool = False):
    """A deterministic sampler built from the training noise schedule's config (optionally with Karras sigmas)."""
    if karras and name not in KARRAS_SAMPLERS:
        raise RetinaugError(f"karras sigmas need scheduler {' or '.join(KARRAS_SAMPLERS)}, not {name}")
    return SAMPLERS[name].from_config(train_scheduler_config, **({"use_karras_sigmas": True} if karras else {}))


def seed_generators(seeds: Sequence[int]) -> list[torch.Generator]:
    """One CPU torch.Generator per image: the noise of image k depends on its seed only."""
    return [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) in [-1, 1] -> (B, H, W, 3) uint8."""
    return ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def to_unit(images: np.ndarray | torch.Tensor, device) -> torch.Tensor:
    """(B, H, W, 3) uint8 (array or tensor) -> (B, 3, H, W) float in [-1, 1]."""
    return torch.as_tensor(images).permute(0, 3, 1, 2).float().div(127.5).sub(1).to(device)


def denoising_steps(steps: int, strength: float) -> int:
    """How many of `steps` sampling steps img2img runs at `strength` (diffusers' rule: int(steps x strength))."""
    return min(int(steps * strength), steps)


def sampling_defaults(pipe: Callable) -> dict:
    """A pipeline's sampling settings and their defaults (the method's own), read from its call signature."""
    params = inspect.signature(pipe.__call__).parameters.values()
    return {p.name: p.default for p in params if p.name not in PER_IMAGE and p.default is not inspect.Parameter.empty}


class SamplingPipeline:
    """What every method's pipeline shares: img2img depth per image, parents loaded at the model's size, and
    images of equal depth denoised together (`denoise(indices, depth, parent pixels or None)` of a subclass)."""

    size: int
    conditions: Conditions

    def prompt(self, label: str, eye: str | None) -> str | None:
        """The text an image was conditioned on (recorded per image); None for class-embedding models."""
        return None

    def _run(self, labels, seeds, parents, strengths, steps: int, denoise) -> np.ndarray:
        n = len(labels)
        if len(seeds) != n:
            raise RetinaugError(f"{n} labels but {len(seeds)} seeds: one seed per image")
        if parents is None:
            return denoise(list(range(n)), steps, None)
        if len(parents) != n or any(p is None for p in parents):
            raise RetinaugError("img2img needs a parent (a real TRAIN image) for every image")
        if strengths is None or isinstance(strengths, (int, float)):
            strengths = [1.0 if strengths is None else float(strengths)] * n
        pixels = np.stack([load_image(p, self.size) for p in parents])
        out = pixels.copy()  # depth 0: the parent itself
        depth = np.array([denoising_steps(steps, s) for s in strengths])
        for d in sorted(set(depth.tolist()) - {0}):
            idx = np.flatnonzero(depth == d).tolist()
            out[idx] = denoise(idx, d, pixels[idx])
        return out


class ClassDiffusionPipeline(SamplingPipeline):
    """Class-conditional diffusion with classifier-free guidance in pixel space (`ddpm`) or, given an
    AutoencoderKL, in its latent space (`ldm`)."""

    def __init__(self, unet: UNet2DModel, noise, conditions: Conditions, size: int, vae=None):
        self.unet, self.noise, self.conditions, self.size, self.vae = unet, noise, conditions, size, vae

    @property
    def device(self) -> torch.device:
        return self.unet.device

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Pixels in [-1, 1] -> what the UNet denoises (the latent's mode, scaled, for ldm)."""
        return x if self.vae is None else self.vae.encode(x).latent_dist.mode() * self.vae.config.scaling_factor

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return z if self.vae is None else self.vae.decode(z / self.vae.config.scaling_factor).sample

    @torch.no_grad()
    def __call__(
        self,
        labels: Sequence[str],
        seeds: Sequence[int],
        parents: Sequence[str] | None = None,
        strengths: Sequence[float] | float | None = None,
        eyes: Sequence[str] | None = None,
        steps: int = 25,
        guidance: float = 3.0,
        scheduler: str = "dpm",
        karras: bool = False,
        precision: str = "no",
    ) -> np.ndarray:
        cond_all = torch.tensor(self.conditions.index(labels, eyes), device=self.device)
        unet_cfg = self.unet.config

        def denoise(idx: list[int], depth: int, parent_pixels: np.ndarray | None) -> np.ndarray:
            sampler = make_sampler(scheduler, self.noise.config, karras)
            sampler.set_timesteps(steps, device=self.device)
            start = (steps - depth) * sampler.order
            timesteps = sampler.timesteps[start:]
            if hasattr(sampler, "set_begin_index"):
                sampler.set_begin_index(start)
            cond = cond_all[idx]
            null = torch.full_like(cond, self.conditions.null)
            shape = (len(idx), unet_cfg.in_channels, unet_cfg.sample_size, unet_cfg.sample_size)
            noise = randn_tensor(shape, generator=seed_generators([seeds[k] for k in idx]), device=self.device)
            with autocast(precision, self.device):
                if parent_pixels is None:
                    x = noise * sampler.init_noise_sigma
                else:
                    x = sampler.add_noise(
                        self.encode(to_unit(parent_pixels, self.device)).float(), noise, timesteps[:1].repeat(len(idx))
                    )
                for t in timesteps:
                    inp = sampler.scale_model_input(x, t)
                    if guidance != 1.0:
                        c, u = (
                            self.unet(torch.cat([inp, inp]), t, class_labels=torch.cat([cond, null]))
                            .sample.float()
                            .chunk(2)
                        )
                        pred = u + guidance * (c - u)
                    else:
                        pred = self.unet(inp, t, class_labels=cond).sample.float()
                    x = sampler.step(pred, t, x).prev_sample
                return to_uint8(self.decode(x))

        return self._run(labels, seeds, parents, strengths, steps, denoise)
