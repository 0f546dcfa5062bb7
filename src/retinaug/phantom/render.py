"""One phantom fundus image: healthy anatomy, class findings, then camera nuisance.

Everything is drawn for a right eye (disc right of the macula, as in a fundus photo of a right eye) and
mirrored for a left eye. Randomness comes from two streams: the *patient* stream (seed, patient) fixes
traits shared by both eyes (pigmentation, disc size, severity), the *eye* stream (seed, patient, eye) the
rest, so an image depends only on (seed, patient, eye, label, size) and never on generation order.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageFilter

from ..classes import CODES
from ..errors import RetinaugError
from .canvas import Canvas, grid, smoothstep, to_uint8
from .findings import Anatomy, Plan, pick_rare, plan

EYES = ("left", "right")


@dataclass
class Traits:
    """Per-patient traits both eyes share."""

    pigment: np.ndarray  # base fundus RGB
    disc_r: float
    severity: float  # 0 for N; each eye varies it a little
    rare: list[str]  # O only: which rarer findings this patient has


def patient_traits(seed: int, patient: int, label: str) -> Traits:
    rng = np.random.default_rng([seed, patient, 0])  # eyes use 1 and 2 (a missing trailing word reads as 0)
    pigment = np.array([rng.uniform(0.72, 0.9), rng.uniform(0.26, 0.4), rng.uniform(0.08, 0.16)], np.float32)
    disc_r = float(rng.uniform(0.115, 0.14))
    severity = 0.0 if label == "N" else float(rng.uniform(0.05, 1.0))
    return Traits(pigment, disc_r, severity, pick_rare(rng, severity) if label == "O" else [])


def _background(cv: Canvas, rng: np.random.Generator, pigment: np.ndarray, an: Anatomy) -> None:
    r2 = cv.x**2 + cv.y**2
    a = rng.uniform(0, 2 * math.pi)
    gradient = rng.uniform(0.05, 0.2) * (math.cos(a) * cv.x + math.sin(a) * cv.y)
    dx, dy = an.disc
    glow = 0.08 * np.exp(-((cv.x - dx) ** 2 + (cv.y - dy) ** 2) / 0.05)
    cv.illum = (1.05 - 0.5 * r2 + gradient + glow).astype(np.float32)
    texture = 1 + 0.05 * cv.noise(rng, 5) + 0.035 * cv.noise(rng, 14) + 0.025 * cv.noise(rng, 40)
    cv.rgb = pigment[None, None, :] * (cv.illum * texture)[..., None]
    mx, my = an.macula
    macula = np.exp(-((cv.x - mx) ** 2 + (cv.y - my) ** 2) / (2 * 0.11**2))
    cv.tint(0.45 * macula, (0.6, 0.5, 0.6))
    fovea = np.exp(-((cv.x - mx) ** 2 + (cv.y - my) ** 2) / (2 * 0.012**2))
    cv.paint(0.35 * fovea, (1.0, 0.85, 0.6))


def _tessellation(cv: Canvas, rng: np.random.Generator, strength: float) -> None:
    """Tigroid fundus: broad orange choroidal vessels over dark inter-vascular spaces (ridged noise)."""
    ridges = 1 - np.abs(np.tanh(1.2 * (cv.noise(rng, 7) + 0.4 * cv.noise(rng, 13))))
    bands = smoothstep(0.25, 0.75, ridges)
    cv.tint(strength * 0.6 * (1 - bands), (0.55, 0.42, 0.5))
    cv.paint(strength * 0.25 * bands, (1.0, 0.55, 0.3))


def _atrophy(cv: Canvas, rng: np.random.Generator, an: Anatomy, width: float) -> None:
    """Peripapillary atrophy: a pale crescent on the temporal side of the disc (towards the macula)."""
    im, d = cv.layer()
    dx, dy = an.disc
    w = width * an.disc_r
    cv.ellipse(d, dx - 0.5 * w, dy, an.disc_r + 0.6 * w, (an.disc_r + 0.3 * w) * 1.05, rng.normal(0, 0.15))
    cv.paint(cv.alpha(im, blur=0.006) * 0.85, (1.0, 0.85, 0.65))


def _disc(cv: Canvas, rng: np.random.Generator, an: Anatomy, p: Plan) -> None:
    """Orange-pink neuroretinal rim around a pale cup; drawn over the vessels, which show through faintly."""
    dx, dy = an.disc
    rd = an.disc_r
    bright = float(np.clip(cv.illum[cv.size // 2, cv.size // 2], 0.8, 1.0))
    im, d = cv.layer()
    cv.ellipse(d, dx, dy, rd, rd * rng.uniform(1.0, 1.12), math.pi / 2 + rng.normal(0, 0.1))
    pallor = p.disc_pallor
    rim = np.array([1.0, 0.6 + 0.2 * pallor, 0.38 + 0.3 * pallor]) * bright
    cv.paint(cv.alpha(im, blur=0.008) * 0.75, rim, lit=False)
    im, d = cv.layer()
    rc = p.cdr * rd
    cv.ellipse(d, dx - 0.1 * (rd - rc), dy, rc, rc * rng.uniform(1.0, 1.15), math.pi / 2 + rng.normal(0, 0.1))
    cv.paint(cv.alpha(im, blur=0.005) * 0.9, np.array([1.0, 0.9, 0.72]) * bright, lit=False)


def _vessel_tree(rng: np.random.Generator, an: Anatomy, kind: int, artery_scale: float):
    """Random-walk branching tree from the disc: 2 temporal arcades curving around the macula, 2 nasal
    trunks and 2 small macular twigs. Returns polylines [(points, widths per segment)]."""
    dx, dy = an.disc
    base = 0.028 if kind == 1 else 0.02 * artery_scale  # veins wider than arteries
    step = 0.04
    out: list[tuple[list[tuple[float, float]], list[float]]] = []

    def walk(x, y, theta, width, steps, bend, depth, outward):
        pts, ws = [(x, y)], []
        for i in range(steps):
            theta += bend * math.exp(-i / 10) + rng.normal(0, 0.06)
            w = width * (1 - 0.45 * i / max(steps, 1))
            x, y = x + step * math.cos(theta), y + step * math.sin(theta)
            pts.append((x, y))
            ws.append(w)
            if x * x + y * y > 1.0:
                break
            if depth < 2 and i > 2 and rng.random() < (0.1 if depth == 0 else 0.05):
                side = outward if rng.random() < 0.7 else -outward
                walk(
                    x,
                    y,
                    theta + side * rng.uniform(0.5, 1.0),
                    w * rng.uniform(0.55, 0.75),
                    int((steps - i) * rng.uniform(0.3, 0.6)) + 2,
                    0.0,
                    depth + 1,
                    side,
                )
        out.append((pts, ws))

    for sign in (-1, 1):  # -1 superior, +1 inferior (image y points down)
        alpha = rng.uniform(1.1, 1.35) + (0.1 if kind == 0 else -0.05)
        sx, sy = dx + rng.normal(0, 0.01), dy + sign * 0.3 * an.disc_r
        # temporal arcade: starts steep, bends back towards horizontal around the macula
        walk(sx, sy, math.pi - sign * alpha, base, 32, sign * alpha / 10 * rng.uniform(0.9, 1.1), 0, sign)
        walk(sx, sy, sign * rng.uniform(0.3, 0.9), base * 0.75, 14, 0.0, 0, sign)  # nasal trunk
        walk(dx - 0.4 * an.disc_r, dy, math.pi + sign * rng.uniform(0.1, 0.3), base * 0.35, 6, 0.0, 2, sign)
    return out


def _vessels(cv: Canvas, rng: np.random.Generator, an: Anatomy, p: Plan) -> None:
    masks = []
    for kind in (1, 0):  # veins, then arteries
        im, d = cv.layer()
        for pts, widths in _vessel_tree(rng, an, kind, p.artery_width):
            cv.polyline(d, pts, widths)
        masks.append(im)
    vein = cv.alpha(masks[0], blur=0.004)
    artery = cv.alpha(masks[1], blur=0.004)
    if p.av_nicking > 0:  # veins vanish beside the arteries that cross them (AV nicking)
        halo = Image.fromarray(to_uint8(artery)).filter(ImageFilter.MaxFilter(2 * max(1, round(0.012 * cv.size)) + 1))
        vein *= 1 - p.av_nicking * np.minimum(np.asarray(halo, np.float32) * (2 / 255), 1)
    cv.tint(vein * 0.8, (0.48, 0.2, 0.27))
    pale = 1 - p.artery_width  # narrowed arteries also look paler ("copper wiring")
    cv.tint(artery * 0.7, (0.78 + 0.12 * pale, 0.45 + 0.25 * pale, 0.42 + 0.15 * pale))


def _cataract(cv: Canvas, rng: np.random.Generator, haze: float) -> None:
    """Lens opacity: blur, a milky veil and lost contrast."""
    cv.blur(0.005 + 0.035 * haze)
    veil = np.array([0.75, 0.55, 0.4], np.float32) * rng.uniform(0.8, 1.05)
    cv.rgb += (0.25 + 0.5 * haze) * (veil * cv.illum[..., None] - cv.rgb)


@lru_cache(maxsize=8)
def _fov(size: int) -> np.ndarray:
    """The round field of view with a soft 3-pixel edge, (size, size, 1)."""
    x, y = grid(size)
    return (1 - smoothstep(0.94 - 1.5 / size, 0.94 + 1.5 / size, np.sqrt(x**2 + y**2)))[..., None]


def _camera(rgb: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
    """Nuisance: colour temperature, exposure, rotation, blur, field-of-view mask, noise, JPEG round-trip."""
    temp = rng.normal(0, 1)
    gains = np.array([1 + 0.06 * temp, 1.0, 1 - 0.15 * temp], np.float32) * rng.uniform(0.75, 1.2)
    rgb = rgb * gains
    im = Image.fromarray(to_uint8(rgb)).rotate(rng.uniform(-12, 12), resample=Image.Resampling.BILINEAR)
    blur = rng.uniform(0, 0.5) * size / 128
    if blur > 0.05:
        im = im.filter(ImageFilter.GaussianBlur(blur))
    noise = rng.standard_normal((size, size, 3), dtype=np.float32) * rng.uniform(1, 4)
    arr = np.asarray(im, np.float32) * _fov(size) + noise
    arr = np.clip(arr + 0.5, 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=int(rng.integers(70, 96)))
    buf.seek(0)
    with Image.open(buf) as jpg:
        return np.asarray(jpg.convert("RGB"))


def render_fundus(label: str, patient: int, eye: str, size: int = 128, seed: int = 0) -> tuple[np.ndarray, dict]:
    """Render one (size, size, 3) uint8 image; also return {"severity", "findings"} for the manifest."""
    if label not in CODES or eye not in EYES:
        raise RetinaugError(
            f"render_fundus: label must be one of {','.join(CODES)} and eye left/right, got {label!r}, {eye!r}"
        )
    traits = patient_traits(seed, patient, label)
    rng = np.random.default_rng([seed, patient, 1 + EYES.index(eye)])
    severity = float(np.clip(traits.severity * rng.uniform(0.75, 1.15), 0, 1)) if label != "N" else 0.0
    p = plan(label, severity, rng, traits.rare)
    disc = (float(rng.uniform(0.36, 0.44)), float(rng.normal(-0.02, 0.04)))
    macula = (float(disc[0] - rng.uniform(0.42, 0.5)), float(disc[1] + rng.normal(0.04, 0.02)))
    an = Anatomy(disc=disc, disc_r=traits.disc_r, macula=macula)
    cv = Canvas(size)
    _background(cv, rng, traits.pigment * (1.08 if label == "M" else 1.0), an)
    if p.tessellation > 0:
        _tessellation(cv, rng, p.tessellation)
    if p.ppa > 0:
        _atrophy(cv, rng, an, p.ppa)
    _vessels(cv, rng, an, p)
    _disc(cv, rng, an, p)
    for painter in p.lesions:
        painter(cv, an, rng, severity)
    if p.haze > 0:
        _cataract(cv, rng, p.haze)
    rgb = cv.rgb[:, ::-1] if eye == "left" else cv.rgb
    return _camera(rgb, rng, size), {"severity": round(severity, 3), "findings": ";".join(p.findings)}
