"""The ldm autoencoder's middle self-attention on a CPU: seconds per training step with and without it, side by
side in one process (the odir-cpu-sized ldm: 128 px, levels [32, 64, 64], batch 16).

    python benchmarks/vae_mid_attention.py [--size 128] [--steps 5]
"""

from __future__ import annotations

import argparse
import time

import torch
from diffusers import AutoencoderKL

from retinaug.generate.config import LDMConfig


def step_seconds(cfg: LDMConfig, mid_attention: bool, steps: int, batch: int) -> float:
    levels = len(cfg.vae_block_out_channels)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * levels,
        up_block_types=("UpDecoderBlock2D",) * levels,
        block_out_channels=tuple(cfg.vae_block_out_channels),
        layers_per_block=cfg.vae_layers_per_block,
        latent_channels=cfg.latent_channels,
        norm_num_groups=cfg.norm_num_groups,
        sample_size=cfg.size,
        mid_block_add_attention=mid_attention,
    )
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr)
    x = torch.rand(batch, 3, cfg.size, cfg.size) * 2 - 1
    times = []
    for _ in range(steps + 1):  # the first step warms up
        t = time.perf_counter()
        out = vae(x).sample
        loss = (out - x).abs().mean()
        loss.backward()
        opt.step()
        opt.zero_grad()
        times.append(time.perf_counter() - t)
    return sum(times[1:]) / steps


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=5)
    args = ap.parse_args()
    torch.manual_seed(0)
    cfg = LDMConfig(size=args.size)
    with_attn = step_seconds(cfg, True, args.steps, cfg.vae_batch_size)
    without = step_seconds(cfg, False, args.steps, cfg.vae_batch_size)
    print(
        f"size {args.size}, batch {cfg.vae_batch_size}, {torch.get_num_threads()} threads: "
        f"mid attention {with_attn:.2f} s/step, without {without:.2f} s/step, ratio {with_attn / without:.2f}x"
    )


if __name__ == "__main__":
    main()
