"""Quality stages: similarity matcher, synthetic-data audit (memorization, FID/KID, precision/recall), and
the configs of selection/audit. `retinaug.select.select` is imported from its own module (it uses these)."""

from ..augment import augment
from .audit import audit
from .config import AuditConfig, SelectConfig
from .match import match, topk_cosine

__all__ = ["AuditConfig", "SelectConfig", "audit", "augment", "match", "topk_cosine"]
