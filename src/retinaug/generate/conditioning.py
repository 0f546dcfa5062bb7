"""What a generator is conditioned on: the class, optionally the eye side, and a null condition for guidance.

One integer per condition, so every method can use it as a class-embedding index (ddpm, ldm) or as a row of
a prompt table (sd-lora): `class * 2 + side` with the side conditioned (left 0, right 1; a horizontal flip
turns one into the other, i.e. flips the lowest bit), `class` without; the last index is the null condition
that classifier-free guidance contrasts with.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..errors import RetinaugError

SIDES = ("left", "right")


@dataclass(frozen=True)
class Conditions:
    classes: tuple[str, ...]
    eyes: bool = False

    @property
    def null(self) -> int:
        """Index of the unconditional (null) condition; also the number of real conditions."""
        return len(self.classes) * (len(SIDES) if self.eyes else 1)

    def entries(self) -> list[tuple[str, str | None]]:
        """(class, side) of every condition index below `null`, in index order."""
        return [(c, s) for c in self.classes for s in (SIDES if self.eyes else (None,))]

    def index(self, labels: Sequence[str], eyes: Sequence[str] | None = None) -> list[int]:
        """Condition indices of images of `labels` (and eye sides, when conditioned on them)."""
        unknown = sorted(set(labels) - set(self.classes))
        if unknown:
            raise RetinaugError(
                f"the generator was not trained on class(es) {', '.join(unknown)}; it knows {', '.join(self.classes)}"
            )
        if not self.eyes:
            return [self.classes.index(c) for c in labels]
        if eyes is None or len(eyes) != len(labels) or any(e not in SIDES for e in eyes):
            raise RetinaugError(
                "this generator is conditioned on the eye side (condition_eye): every image needs eye left or right"
            )
        return [len(SIDES) * self.classes.index(c) + SIDES.index(e) for c, e in zip(labels, eyes)]

    def flipped(self, cond: torch.Tensor) -> torch.Tensor:
        """The conditions of horizontally flipped images: left and right swap, the class stays."""
        return cond ^ 1 if self.eyes else cond
