"""Generators: class-conditional diffusion from scratch (`ddpm`) and Stable Diffusion + LoRA (`sd-lora`).

    from retinaug.generate import finetune, generate
    finetune("RUN/data", "ddpm", {"size": 32, "steps": 1500}, "RUN/generator")
    generate("RUN/generator", "RUN/data", "RUN/synthetic", ratio=1.0)
"""

from . import ddpm, sd_lora  # noqa: F401  (register the generators)
from .base import Generator
from .config import DDPMConfig, GenerateConfig, SDLoRAConfig
from .registry import create_generator, list_generators, load_generator, register_generator
from .run import finetune, generate, image_seed

__all__ = [
    "DDPMConfig",
    "GenerateConfig",
    "Generator",
    "SDLoRAConfig",
    "create_generator",
    "finetune",
    "generate",
    "image_seed",
    "list_generators",
    "load_generator",
    "register_generator",
]
