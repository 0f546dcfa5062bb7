"""Per-eye class labels from ODIR's diagnostic keywords.

ODIR's N..O flags (and the Kaggle `labels` column built from them) are per *patient*: a patient with a
cataract in one eye and a normal other eye has both eyes labelled C. The `Left-/Right-Diagnostic Keywords`
are per eye, so they give per-eye labels. The mapping follows how ODIR's annotators turned keywords into
patient flags (checked on the 2,584 patients of the shared copy: every keyword below co-occurs with its flag
in 100% of the patients that carry it), with one decision documented in docs/data.md:

- N: "normal fundus".
- D: any "... nonproliferative retinopathy" / "non proliferative retinopathy", "... diabetic retinopathy"
  (incl. proliferative, severe proliferative, suspected).
- G: "glaucoma", "suspected glaucoma".
- C: "cataract".
- A: "... age-related macular degeneration" (dry, wet, plain). "drusen" is O, as ODIR flags it.
- H: "hypertensive retinopathy".
- M: "pathological myopia", "myopic maculopathy", "myopia retinopathy", "peripapillary atrophy"
  (decision: ODIR sets M in every patient with it; it is the myopic crescent). "tessellated fundus" is O.
- ignored (say nothing about disease): "lens dust", "low image quality", "image offset",
  "optic disk photographically invisible", "anterior segment image", "no fundus image". An eye with
  only these keywords is not a usable fundus photo and is rejected ('non-fundus').
- everything else (epiretinal membrane, drusen, laser spot, vein occlusion, ...): O.
"""

from __future__ import annotations

import re

from ..classes import CODES

NON_FUNDUS = frozenset(
    {
        "lens dust",
        "low image quality",
        "image offset",
        "optic disk photographically invisible",
        "anterior segment image",
        "no fundus image",
    }
)
# (regular expression, class): the first matching rule wins; unmatched keywords are O.
RULES: tuple[tuple[str, str], ...] = (
    (r"^normal fundus$", "N"),
    (r"non ?proliferative retinopathy|diabetic retinopathy", "D"),
    (r"^(suspected )?glaucoma$", "G"),
    (r"^cataract$", "C"),
    (r"age-related macular degeneration", "A"),
    (r"^hypertensive retinopathy$", "H"),
    (r"pathological myopia|myopic maculopathy|myopia retinopathy|^peripapillary atrophy$", "M"),
)
_COMPILED = tuple((re.compile(p), c) for p, c in RULES)


def split_keywords(text: object) -> list[str]:
    """ODIR separates keywords with ',' or the full-width '，'; normalise case and spaces."""
    if text is None or (isinstance(text, float) and text != text):
        return []
    return [" ".join(k.split()).lower() for k in re.split(r"[,，;]", str(text)) if k.strip()]


def keyword_class(keyword: str) -> str | None:
    """Class code of one keyword, or None for non-fundus/quality keywords."""
    keyword = " ".join(keyword.split()).lower()
    if keyword in NON_FUNDUS:
        return None
    for pattern, code in _COMPILED:
        if pattern.search(keyword):
            return code
    return "O"


def eye_classes(text: object) -> list[str]:
    """Distinct class codes of one eye's keywords, in class order; [] when only non-fundus keywords.
    'normal fundus' listed next to a finding is dropped (the finding wins)."""
    codes = {c for c in (keyword_class(k) for k in split_keywords(text)) if c is not None}
    if len(codes) > 1:
        codes.discard("N")
    return [c for c in CODES if c in codes]


def primary_class(codes: list[str]) -> str:
    """With --allow-multilabel: the specific finding beats O; among specific ones the class order
    D G C A H M (ODIR's flag order) decides. The full list is kept in the `findings` column."""
    specific = [c for c in codes if c not in ("N", "O")]
    return specific[0] if specific else codes[0]
