"""Package `__init__`s that name their public API without importing it (PEP 562): `from retinaug.classify import
train` loads torch when it is asked for, while the CLI, which reads every verb's config class at start, does not
(diffusers' `_LazyModule` and scientific-python's lazy_loader do the same)."""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any


class LazyPackage(types.ModuleType):
    """A package whose exported names are imported from their submodules on first use. Where a function has its
    module's name (`classify.train`, `quality.audit`), the function is the package's attribute, as it was when the
    `__init__` imported it: the import system's binding of the submodule under that name is not kept."""

    _exports: dict[str, str]

    def __getattr__(self, name: str) -> Any:
        where = self.__dict__.get("_exports", {})
        if name not in where:
            raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")
        return getattr(importlib.import_module(where[name], self.__name__), name)

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, types.ModuleType) and name in self.__dict__.get("_exports", {}):
            return  # `import pkg.train` binds the submodule `train`; the exported function `train` keeps the name
        super().__setattr__(name, value)

    def __dir__(self) -> list[str]:
        return sorted({*super().__dir__(), *self.__dict__.get("_exports", {})})


def lazy_exports(package: str, exports: dict[str, tuple[str, ...]]) -> None:
    """Make `package` (call it from its `__init__` with `__name__`) a LazyPackage whose `exports` map a submodule
    ('.train') to the names it provides."""
    module = sys.modules[package]
    module.__class__ = LazyPackage
    module._exports = {name: sub for sub, names in exports.items() for name in names}
