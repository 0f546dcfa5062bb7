"""The generator registry: retinaug's own generators by name, a plugin's by `register_generator`, a method from its
config class."""

from __future__ import annotations

import pytest

from retinaug.errors import RetinaugError
from retinaug.generate import DDPMConfig, LDMConfig, SDLoRAConfig, create_generator, list_generators
from retinaug.generate.ddpm import DDPMGenerator
from retinaug.generate.registry import _REGISTRY, generator_class, method_of, register_generator


def test_builtin_generators_by_name_and_by_config():
    assert {"ddpm", "ldm", "sd-lora"} <= set(list_generators())
    assert generator_class("ddpm") is DDPMGenerator and DDPMGenerator.name == "ddpm"
    assert [method_of(c()) for c in (DDPMConfig, LDMConfig, SDLoRAConfig)] == ["ddpm", "ldm", "sd-lora"]
    gen = create_generator("ddpm", {"size": 16, "steps": 3})
    assert isinstance(gen, DDPMGenerator) and gen.config.size == 16
    with pytest.raises(RetinaugError, match="unknown generator method 'dpm'; available: ddpm, ldm, sd-lora"):
        generator_class("dpm")


def test_a_plugin_generator_registers_by_decorator():
    class TinyConfig(DDPMConfig):
        pass

    @register_generator("tiny-ddpm")
    class TinyGenerator(DDPMGenerator):
        config_class = TinyConfig

    try:
        assert "tiny-ddpm" in list_generators() and TinyGenerator.name == "tiny-ddpm"
        assert method_of(TinyConfig()) == "tiny-ddpm" and method_of(DDPMConfig()) == "ddpm"
        assert isinstance(create_generator("tiny-ddpm", {"size": 16}), TinyGenerator)
    finally:
        _REGISTRY.pop("tiny-ddpm")
