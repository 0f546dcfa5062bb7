"""`ldm`: latent diffusion (Rombach et al. 2022) trained from scratch on the TRAIN images, in two phases.

1. `vae`: a small diffusers AutoencoderKL (L1 reconstruction + a tiny KL term) on every TRAIN image; its
   reconstruction PSNR/SSIM on held-out val images goes to history.json and a reconstruction grid to recon.png.
2. `diffusion`: ddpm's class-conditional UNet (CFG null condition, EMA, min-SNR) on the autoencoder's latents.
   The training images are encoded once (both orientations, for the flips); the latents are scaled by 1 / their
   standard deviation over the training set (the paper's rescaling), stored as the VAE's `scaling_factor`; each
   batch draws its latents from the stored posteriors.

Both phases run through the shared loop and resume from checkpoints; a finished autoencoder is kept in
OUT/vae/ so an interrupted diffusion phase does not train it again.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL
from PIL import Image
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure
from torchvision.utils import make_grid

from ..cache import image_cache
from ..io import atomic_path
from .base import Nets, Phase
from .checkpoint import training_settings
from .config import LDMConfig
from .ddpm import DDPMGenerator
from .sampling import ClassDiffusionPipeline, to_uint8, to_unit

log = logging.getLogger("retinaug.generate")
# the autoencoder does not depend on these (they shape the latent UNet and its training)
UNET_ONLY = (
    "block_out_channels",
    "layers_per_block",
    "attention_levels",
    "num_train_timesteps",
    "beta_schedule",
    "prediction_type",
    "class_dropout",
    "ema_decay",
    "ema_warmup",
    "ema_power",
    "steps",
    "epochs",
    "batch_size",
    "lr",
    "warmup_steps",
    "weight_decay",
    "snr_gamma",
    "train_classes",
    "condition_eye",
    "recon_images",
)


class AutoencoderObjective(torch.nn.Module):
    """The autoencoder's training forward as one module call (so accelerate's DDP wrapper sees it)."""

    def __init__(self, vae: AutoencoderKL):
        super().__init__()
        self.vae = vae

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        posterior = self.vae.encode(x).latent_dist
        return self.vae.decode(posterior.sample()).sample, posterior.kl()


class LDMGenerator(DDPMGenerator):
    name = "ldm"
    config_class = LDMConfig
    config: LDMConfig

    @property
    def factor(self) -> int:
        return 2 ** (len(self.config.vae_block_out_channels) - 1)

    def build(self) -> None:
        cfg = self.config
        levels = len(cfg.vae_block_out_channels)
        self.vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * levels,
            up_block_types=("UpDecoderBlock2D",) * levels,
            block_out_channels=tuple(cfg.vae_block_out_channels),
            layers_per_block=cfg.vae_layers_per_block,
            latent_channels=cfg.latent_channels,
            norm_num_groups=cfg.norm_num_groups,
            sample_size=cfg.size,
            mid_block_add_attention=cfg.vae_mid_attention,
        ).to(self.device)
        self.objective = AutoencoderObjective(self.vae)
        self.unet = self._unet(cfg.latent_channels, cfg.size // self.factor)
        self.noise = self._noise()

    def phases(self) -> list[Phase]:
        cfg = self.config
        vae = Phase(
            "vae",
            {"objective": self.objective},
            self._vae_loss,
            training_settings(cfg, exclude=UNET_ONLY),
            steps=cfg.vae_steps,
            epochs=cfg.vae_epochs,
            batch_size=cfg.vae_batch_size,
            lr=cfg.vae_lr,
            finish=self._reconstruction,
            save=lambda folder: self.vae.save_pretrained(folder, safe_serialization=True),
            load=self._load_vae,
        )
        return [vae, self.diffusion_phase(training_settings(cfg), start=self._encode_training_images)]

    def _vae_loss(self, nets: Nets, idx: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
        x = self.data.pixels(idx, flip, self.device)
        recon, kl = nets["objective"](x)
        return F.l1_loss(recon.float(), x) + self.config.kl_weight * kl.float().mean()

    def _load_vae(self, folder: Path) -> None:
        self.vae = (
            AutoencoderKL.from_pretrained(folder, local_files_only=True, use_safetensors=True).to(self.device).eval()
        )
        self.objective = AutoencoderObjective(self.vae)

    @torch.no_grad()
    def _encode(self, images: np.ndarray, batch: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
        """Latent mean and std of uint8 images (N, S, S, 3), on the CPU."""
        means, stds = [], []
        for b in range(0, len(images), batch):
            dist = self.vae.encode(to_unit(images[b : b + batch], self.device)).latent_dist
            means.append(dist.mean.cpu())
            stds.append(dist.std.cpu())
        return torch.cat(means), torch.cat(stds)

    def _encode_training_images(self) -> None:
        """Encode every training image and its mirror once; scale the latents to unit variance."""
        self.vae.eval()
        images = self.data.images.numpy()
        plain, mirrored = self._encode(images), self._encode(np.ascontiguousarray(images[:, :, ::-1]))
        self.latent_mean = torch.stack([plain[0], mirrored[0]], dim=1)  # (N, 2, C, h, w)
        self.latent_std = torch.stack([plain[1], mirrored[1]], dim=1)
        # 1 / the standard deviation of the sampled latents mean + std * eps, computed exactly (no draw)
        scale = float(1 / (self.latent_mean.var() + self.latent_std.pow(2).mean()).sqrt())
        self.vae.register_to_config(scaling_factor=scale)
        log.info("ldm latents: %s per image, scaling factor %.4f", tuple(self.latent_mean.shape[2:]), scale)

    def clean_batch(self, idx: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
        side = flip.long()
        mean, std = self.latent_mean[idx, side].to(self.device), self.latent_std[idx, side].to(self.device)
        return (mean + std * torch.randn_like(std)) * self.vae.config.scaling_factor

    @torch.no_grad()
    def _reconstruction(self, out: Path | None) -> dict:
        """PSNR / SSIM of the autoencoder on held-out (val) images, and a grid: originals above reconstructions."""
        rows = self.holdout.head(self.config.recon_images) if self.holdout is not None else None
        if rows is None or rows.empty:
            log.warning("no held-out (val) images: the autoencoder's reconstruction is not measured")
            return {"recon_psnr": None, "recon_ssim": None, "n_recon": 0}
        images = image_cache(rows, self.config.size).rows(rows)
        recon = []
        for b in range(0, len(images), 64):
            x = to_unit(images[b : b + 64], self.device)
            recon.append(self.vae.decode(self.vae.encode(x).latent_dist.mode()).sample.float().clamp(-1, 1).cpu())
        pred, real = (torch.cat(recon) + 1) / 2, (to_unit(images, "cpu") + 1) / 2
        scores = {
            "recon_psnr": float(peak_signal_noise_ratio(pred, real, data_range=1.0)),
            "recon_ssim": float(structural_similarity_index_measure(pred, real, data_range=1.0)),
            "n_recon": len(rows),
        }
        if out is not None:
            k = min(8, len(images))
            both = torch.cat([torch.from_numpy(images[:k]), torch.from_numpy(to_uint8(pred[:k] * 2 - 1))]).permute(
                0, 3, 1, 2
            )
            with atomic_path(out / "recon.png") as tmp:
                Image.fromarray(make_grid(both, nrow=k, padding=2).permute(1, 2, 0).numpy()).save(tmp, format="PNG")
        log.info(
            "ldm autoencoder on %d val images: PSNR %.2f dB, SSIM %.3f",
            len(rows),
            scores["recon_psnr"],
            scores["recon_ssim"],
        )
        return scores

    def save_weights(self, out: Path) -> None:
        super().save_weights(out)
        self.vae.save_pretrained(out / "vae", safe_serialization=True)

    def load_weights(self, path: Path) -> None:
        super().load_weights(path)
        self._load_vae(path / "vae")

    def pipeline(self) -> ClassDiffusionPipeline:
        return ClassDiffusionPipeline(self.unet, self.noise, self.conditions, self.config.size, vae=self.vae)
