"""Generators: class-conditional diffusion from scratch in pixels (`ddpm`) or in a learned latent space (`ldm`),
and Stable Diffusion + LoRA (`sd-lora`).

    from retinaug.generate import finetune, generate
    finetune("RUN/data", "ddpm", {"size": 32, "steps": 1500}, "RUN/generator")      # learns every TRAIN class
    generate("RUN/generator", "RUN/data", "RUN/synthetic", ratio=1.0, classes=["G", "C"])
    generate("RUN/generator", "RUN/data", "RUN/img2img", per_class=50, mode="img2img", strength=[0.3, 0.7])
"""

from . import ddpm, ldm, sd_lora  # noqa: F401  (register the generators)
from .base import Generator, Phase
from .config import DDPMConfig, GenerateConfig, LDMConfig, SDLoRAConfig
from .registry import create_generator, list_generators, load_generator, register_generator
from .run import finetune, generate, image_seed

__all__ = [
    "DDPMConfig",
    "GenerateConfig",
    "Generator",
    "LDMConfig",
    "Phase",
    "SDLoRAConfig",
    "create_generator",
    "finetune",
    "generate",
    "image_seed",
    "list_generators",
    "load_generator",
    "register_generator",
]
