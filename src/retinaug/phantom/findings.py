"""Class findings: what each ODIR class adds to (or changes in) a healthy phantom fundus.

`plan(label, severity, rng)` returns a `Plan`: anatomy modifiers (cup-to-disc ratio, artery calibre, AV
nicking, tessellation, atrophy crescent, cataract veil) plus lesion painters run after the vessels.
Severity 0..1 scales counts, sizes and contrast, so mild cases look almost normal (a classifier cannot
reach 100%) and severe ones stay visible after downscaling to 32-64 px.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .canvas import Canvas, random_points


@dataclass
class Anatomy:
    """Where the landmarks of one (right-eye, canonical) image are, for lesions that place around them."""

    disc: tuple[float, float]
    disc_r: float
    macula: tuple[float, float]


Painter = Callable[[Canvas, Anatomy, np.random.Generator, float], None]


@dataclass
class Plan:
    findings: list[str] = field(default_factory=list)
    cdr: float = 0.35  # cup-to-disc ratio
    disc_pallor: float = 0.0
    artery_width: float = 1.0  # calibre multiplier
    av_nicking: float = 0.0  # 0..1 how much veins are concealed beside arteries
    tessellation: float = 0.0
    ppa: float = 0.0  # peripapillary atrophy crescent width, in disc radii
    haze: float = 0.0  # cataract veil 0..1
    lesions: list[Painter] = field(default_factory=list)


# --- lesion painters ------------------------------------------------------------------------------
def _count(rng: np.random.Generator, s: float, lo: float, hi: float) -> int:
    return int(rng.poisson(lo + (hi - lo) * s))


def microaneurysms(cv: Canvas, an: Anatomy, rng, s: float) -> None:
    k = _count(rng, s, 3, 40)
    im, d = cv.layer()
    for x, y in zip(*random_points(rng, k, 0.55, an.macula)):
        cv.circle(d, x, y, rng.uniform(0.007, 0.012))
    cv.tint(cv.alpha(im), (0.45, 0.12, 0.12))


def blot_haemorrhages(cv: Canvas, an: Anatomy, rng, s: float) -> None:
    k = _count(rng, s, 1, 14)
    im, d = cv.layer()
    for x, y in zip(*random_points(rng, k, 0.8)):
        cv.circle(d, x, y, rng.uniform(0.015, 0.02 + 0.03 * s))
    cv.tint(cv.alpha(im, blur=0.006), (0.5, 0.15, 0.15))


def hard_exudates(cv: Canvas, an: Anatomy, rng, s: float) -> None:
    """Waxy yellow dots in clusters and partial rings (circinate) around the macula."""
    im, d = cv.layer()
    for _ in range(max(1, _count(rng, s, 1, 6))):
        cx, cy = random_points(rng, 1, 0.3, an.macula)
        spread = rng.uniform(0.03, 0.08)
        for _ in range(_count(rng, s, 3, 22)):
            cv.circle(
                d, cx[0] + rng.normal(0, spread), cy[0] + rng.normal(0, spread), rng.uniform(0.006, 0.01 + 0.015 * s)
            )
    cv.paint(cv.alpha(im), (1.0, 0.93, 0.45))


def flame_haemorrhages(cv: Canvas, an: Anatomy, rng, s: float, k: int | None = None, sector=None) -> None:
    """Streaks in the nerve-fibre layer: elongated along the radial direction from the disc."""
    k = _count(rng, s, 1, 10) if k is None else k
    im, d = cv.layer()
    dx, dy = an.disc
    for _ in range(k):
        ang = rng.uniform(*sector) if sector else rng.uniform(0, 2 * math.pi)
        r = rng.uniform(1.6, 5) * an.disc_r
        x, y = dx + r * math.cos(ang), dy + r * math.sin(ang)
        length = rng.uniform(0.03, 0.05 + 0.04 * s)
        cv.ellipse(d, x, y, length, length * rng.uniform(0.25, 0.4), ang + rng.normal(0, 0.2))
    cv.tint(cv.alpha(im, blur=0.004), (0.55, 0.12, 0.12))


def cotton_wool_spots(cv: Canvas, an: Anatomy, rng, s: float) -> None:
    k = max(1, _count(rng, s, 0.5, 5))
    im, d = cv.layer()
    for x, y in zip(*random_points(rng, k, 5 * an.disc_r, an.disc, inner=1.5 * an.disc_r)):
        r = rng.uniform(0.025, 0.035 + 0.03 * s)
        cv.ellipse(d, x, y, r, r * rng.uniform(0.5, 0.9), rng.uniform(0, math.pi))
    cv.paint(cv.alpha(im, blur=0.012) * (0.55 + 0.4 * s), (0.98, 0.95, 0.85))


def drusen(cv: Canvas, an: Anatomy, rng, s: float) -> None:
    """Yellow deposits clustered around the macula; severe cases get confluent soft drusen + pigment."""
    im, d = cv.layer()
    radius = 0.12 + 0.15 * s
    for x, y in zip(*random_points(rng, _count(rng, s, 10, 90), radius, an.macula)):
        cv.circle(d, x, y, rng.uniform(0.008, 0.014 + 0.02 * s))
    cv.paint(cv.alpha(im, blur=0.007) * (0.6 + 0.35 * s), (0.95, 0.82, 0.55))
    if s > 0.6:
        im, d = cv.layer()
        for x, y in zip(*random_points(rng, _count(rng, s, 2, 10), radius * 0.7, an.macula)):
            cv.circle(d, x, y, rng.uniform(0.006, 0.014))
        cv.tint(cv.alpha(im), (0.35, 0.3, 0.3))


def laser_scars(cv: Canvas, an: Anatomy, rng, s: float) -> None:
    """Panretinal photocoagulation: rows of pale spots with pigmented rims in the mid-periphery."""
    xs, ys = random_points(rng, _count(rng, s, 25, 90), 0.85, an.macula, inner=0.42)
    rad = rng.uniform(0.015, 0.025, len(xs))
    rim, d = cv.layer()
    core, dc = cv.layer()
    for x, y, r in zip(xs, ys, rad):
        cv.circle(d, x, y, r)
        cv.circle(dc, x, y, r * 0.6)
    cv.tint(cv.alpha(rim), (0.35, 0.25, 0.2))
    cv.paint(cv.alpha(core), (0.95, 0.82, 0.6))


def naevus(cv: Canvas, an: Anatomy, rng, s: float) -> None:
    im, d = cv.layer()
    (x,), (y,) = random_points(rng, 1, 0.7, inner=0.25)
    r = rng.uniform(0.06, 0.08 + 0.06 * s)
    cv.ellipse(d, x, y, r, r * rng.uniform(0.6, 1), rng.uniform(0, math.pi))
    cv.paint(cv.alpha(im, blur=0.015) * 0.8, (0.32, 0.3, 0.3))


def myelinated_fibres(cv: Canvas, an: Anatomy, rng, s: float) -> None:
    """White feathery patch hugging the disc along the arcades."""
    im, d = cv.layer()
    dx, dy = an.disc
    centre = rng.choice([-1, 1]) * math.pi / 2 + rng.normal(0, 0.4)
    for _ in range(14):
        ang = centre + rng.normal(0, 0.45)
        r = an.disc_r * rng.uniform(1.1, 2.2 + 1.5 * s)
        cv.ellipse(d, dx + r * math.cos(ang), dy + r * math.sin(ang), 0.05 + 0.03 * s, 0.015, ang)
    cv.paint(cv.alpha(im, blur=0.008) * 0.85, (0.97, 0.95, 0.9))


def chorioretinal_scar(cv: Canvas, an: Anatomy, rng, s: float) -> None:
    im, d = cv.layer()
    (x,), (y,) = random_points(rng, 1, 0.6, inner=0.2)
    r = rng.uniform(0.07, 0.08 + 0.08 * s)
    cv.ellipse(d, x, y, r, r * rng.uniform(0.6, 1), rng.uniform(0, math.pi))
    cv.paint(cv.alpha(im, blur=0.006), (0.95, 0.9, 0.78))
    pig, dp = cv.layer()
    for px, py in zip(*random_points(rng, 10, r * 1.1, (x, y), inner=r * 0.6)):
        cv.circle(dp, px, py, rng.uniform(0.008, 0.02))
    cv.tint(cv.alpha(pig), (0.2, 0.15, 0.12))


def vein_occlusion(cv: Canvas, an: Anatomy, rng, s: float) -> None:
    """Branch retinal vein occlusion: dense flame haemorrhages confined to one quadrant."""
    base = rng.choice([math.pi + 0.7, math.pi - 0.7])
    flame_haemorrhages(cv, an, rng, s, k=_count(rng, s, 12, 35), sector=(base - 0.45, base + 0.45))


def asteroid_hyalosis(cv: Canvas, an: Anatomy, rng, s: float) -> None:
    im, d = cv.layer()
    for x, y in zip(*random_points(rng, _count(rng, s, 40, 140), 0.85)):
        cv.circle(d, x, y, rng.uniform(0.005, 0.01))
    cv.paint(cv.alpha(im, blur=0.003) * 0.8, (1.0, 1.0, 0.9), lit=False)


RARE: dict[str, Painter] = {
    "laser_scars": laser_scars,
    "naevus": naevus,
    "myelinated_fibres": myelinated_fibres,
    "chorioretinal_scar": chorioretinal_scar,
    "vein_occlusion": vein_occlusion,
    "asteroid_hyalosis": asteroid_hyalosis,
}


# --- the plan per class ---------------------------------------------------------------------------
def pick_rare(rng: np.random.Generator, s: float) -> list[str]:
    """The rarer findings of an O patient (one, two when severe); chosen once per patient for both eyes."""
    return [str(n) for n in rng.choice(sorted(RARE), size=1 + int(s > 0.6), replace=False)]


def plan(label: str, s: float, rng: np.random.Generator, rare: list[str] | None = None) -> Plan:
    """Anatomy modifiers + lesion painters for class `label` at severity `s` (0 for N); `rare` names the
    findings of an O image (default: drawn from `rng`)."""
    p = Plan(cdr=float(rng.uniform(0.25, 0.45)))
    if label == "D":
        p.findings = ["microaneurysms", "hard_exudates"] + (["blot_haemorrhages"] if s > 0.25 else [])
        p.lesions = [microaneurysms, hard_exudates] + ([blot_haemorrhages] if s > 0.25 else [])
    elif label == "G":
        p.findings = ["enlarged_cup"]
        p.cdr = float(0.5 + 0.4 * s + rng.uniform(-0.03, 0.03))
        p.disc_pallor = 0.15 + 0.5 * s
    elif label == "C":
        p.findings = ["cataract_veil"]
        p.haze = 0.25 + 0.75 * s
    elif label == "A":
        p.findings = ["drusen"]
        p.lesions = [drusen]
    elif label == "H":
        p.findings = ["narrow_arteries", "av_nicking", "flame_haemorrhages"] + (
            ["cotton_wool_spots"] if s > 0.35 else []
        )
        p.artery_width = 1 - 0.55 * s
        p.av_nicking = 0.4 + 0.6 * s
        p.lesions = [flame_haemorrhages] + ([cotton_wool_spots] if s > 0.35 else [])
    elif label == "M":
        p.findings = ["tessellation", "peripapillary_atrophy"]
        p.tessellation = 0.3 + 0.7 * s
        p.ppa = 0.3 + 1.1 * s
    elif label == "O":
        names = rare if rare is not None else pick_rare(rng, s)
        p.findings = list(names)
        p.lesions = [RARE[n] for n in names]
    return p
