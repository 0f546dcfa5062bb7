"""A float RGB canvas in normalised coordinates (-1..1, y down) with anti-aliased mask drawing.

Why a canvas: every anatomical part and finding is "draw a mask, then tint or paint the image through it".
Masks are drawn with PIL at a supersampled resolution (fast C drawing, sub-pixel widths) and box-filtered
down, so thin vessels and tiny lesions keep a sensible intensity at any output size.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFilter


@lru_cache(maxsize=8)
def grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    g = ((np.arange(size, dtype=np.float32) + 0.5) / size * 2 - 1).astype(np.float32)
    x, y = np.meshgrid(g, g)
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y


def smoothstep(edge0: float, edge1: float, v: np.ndarray) -> np.ndarray:
    t = np.clip((v - edge0) / (edge1 - edge0), 0, 1)
    return t * t * (3 - 2 * t)


class Canvas:
    """`rgb` (H, W, 3) float32 in [0, 1]; `illum` (H, W) the illumination field lesions are lit by."""

    def __init__(self, size: int):
        self.size = size
        self.hi = size * max(2, math.ceil(256 / size))  # mask resolution: >= 256 px, integer factor
        self.x, self.y = grid(size)
        self.rgb = np.zeros((size, size, 3), np.float32)
        self.illum = np.ones((size, size), np.float32)

    # --- masks ---------------------------------------------------------------------------------
    def layer(self) -> tuple[Image.Image, ImageDraw.ImageDraw]:
        im = Image.new("L", (self.hi, self.hi), 0)
        return im, ImageDraw.Draw(im)

    def px(self, u: float) -> float:
        """Normalised coordinate -> hi-res pixel coordinate."""
        return (u + 1) * 0.5 * self.hi

    def circle(self, draw: ImageDraw.ImageDraw, cx: float, cy: float, r: float, fill: int = 255) -> None:
        rp = max(r * 0.5 * self.hi, 0.5)
        x, y = self.px(cx), self.px(cy)
        draw.ellipse((x - rp, y - rp, x + rp, y + rp), fill=fill)

    def ellipse(self, draw, cx: float, cy: float, rx: float, ry: float, angle: float, fill: int = 255) -> None:
        """A rotated ellipse (angle in radians, `rx` along the angle) as a 16-gon."""
        t = np.linspace(0, 2 * np.pi, 16, endpoint=False)
        ex, ey = rx * np.cos(t), ry * np.sin(t)
        ca, sa = math.cos(angle), math.sin(angle)
        pts = [(self.px(cx + a * ca - b * sa), self.px(cy + a * sa + b * ca)) for a, b in zip(ex, ey)]
        draw.polygon(pts, fill=fill)

    def polyline(
        self, draw, pts: list[tuple[float, float]], widths: list[float], chunk: int = 4, fill: int = 255
    ) -> None:
        """A tapering line: `widths[i]` (normalised) for segment i, drawn `chunk` segments per call (fast),
        with round joins and, where wide enough to show a notch, round caps between chunks."""
        hp = [(self.px(x), self.px(y)) for x, y in pts]
        for j in range(0, len(widths), chunk):
            wp = max(widths[j] * 0.5 * self.hi, 1.0)
            draw.line(hp[j : j + chunk + 1], fill=fill, width=round(wp), joint="curve")
            if wp >= 3:
                x, y = hp[j]
                draw.ellipse((x - wp / 2, y - wp / 2, x + wp / 2, y + wp / 2), fill=fill)

    def alpha(self, im: Image.Image, blur: float = 0.0) -> np.ndarray:
        """Hi-res mask -> (H, W) float alpha in [0, 1]; `blur` is a Gaussian sigma in normalised units."""
        im = im.resize((self.size, self.size), Image.Resampling.BOX)
        if blur * self.size > 0.3:  # blurring after the downsample: same look, 4-16x cheaper
            im = im.filter(ImageFilter.GaussianBlur(blur * 0.5 * self.size))
        return np.asarray(im, np.float32) * (1 / 255)

    # --- compositing ---------------------------------------------------------------------------
    def tint(self, a: np.ndarray, mult) -> None:
        """Multiply through the mask (darkening keeps the illumination: vessels, haemorrhages)."""
        self.rgb *= 1 - a[..., None] * (1 - np.asarray(mult, np.float32))

    def paint(self, a: np.ndarray, colour, lit: bool = True) -> None:
        """Blend towards `colour` (scaled by the local illumination when `lit`): exudates, drusen, scars."""
        c = np.asarray(colour, np.float32)
        target = c * self.illum[..., None] if lit else c
        self.rgb += a[..., None] * (target - self.rgb)

    def noise(self, rng: np.random.Generator, cells: int) -> np.ndarray:
        """Smooth zero-mean unit-ish noise: a `cells` x `cells` Gaussian grid upsampled bicubically."""
        small = rng.standard_normal((cells, cells)).astype(np.float32)
        return np.asarray(Image.fromarray(small, "F").resize((self.size, self.size), Image.Resampling.BICUBIC))

    def blur(self, sigma: float) -> None:
        """Gaussian blur of the whole image (`sigma` normalised); used for the cataract veil."""
        if sigma <= 0:
            return
        im = Image.fromarray(to_uint8(self.rgb)).filter(ImageFilter.GaussianBlur(sigma * 0.5 * self.size))
        self.rgb = np.asarray(im, np.float32) * (1 / 255)


def to_uint8(rgb: np.ndarray) -> np.ndarray:
    return (np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8)


def random_points(rng: np.random.Generator, k: int, radius: float = 0.85, centre=(0.0, 0.0), inner: float = 0.0):
    """`k` points uniform over an annulus (inner..radius) around `centre`."""
    r = np.sqrt(rng.uniform(inner**2 / radius**2 if radius else 0, 1, k)) * radius
    t = rng.uniform(0, 2 * np.pi, k)
    return centre[0] + r * np.cos(t), centre[1] + r * np.sin(t)
