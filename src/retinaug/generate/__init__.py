"""Generators: class-conditional diffusion from scratch in pixels (`ddpm`) or in a learned latent space (`ldm`),
and Stable Diffusion + LoRA (`sd-lora`).

    from retinaug.generate import DDPMConfig, GenerateConfig, finetune, generate
    finetune("RUN/data", DDPMConfig(size=32, steps=1500), "RUN/generator")      # learns every TRAIN class
    generate("RUN/generator", "RUN/data", GenerateConfig(ratio=1.0, classes=["G", "C"]), "RUN/synthetic")
    generate("RUN/generator", "RUN/data", GenerateConfig(per_class=50, mode="img2img", strength=[0.3, 0.7]), "RUN/img2img")
"""

from typing import TYPE_CHECKING

from ..lazy import lazy_exports

_EXPORTS = {
    ".base": ("Generator", "Phase"),
    ".config": ("DDPMConfig", "GenerateConfig", "GeneratorConfig", "LDMConfig", "SDLoRAConfig"),
    ".registry": ("create_generator", "list_generators", "load_generator", "register_generator"),
    ".run": ("finetune", "generate", "image_seed"),
}
lazy_exports(__name__, _EXPORTS)
__all__ = [
    "DDPMConfig",
    "GenerateConfig",
    "Generator",
    "GeneratorConfig",
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

if TYPE_CHECKING:  # what type checkers and IDEs see
    from .base import Generator, Phase
    from .config import DDPMConfig, GenerateConfig, GeneratorConfig, LDMConfig, SDLoRAConfig
    from .registry import create_generator, list_generators, load_generator, register_generator
    from .run import finetune, generate, image_seed
