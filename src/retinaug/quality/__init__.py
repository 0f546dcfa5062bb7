"""Quality stages: similarity matcher and synthetic-data audit (memorization, FID/KID, precision/recall)."""

from .audit import audit
from .config import AuditConfig
from .match import match, topk_cosine

__all__ = ["AuditConfig", "audit", "match", "topk_cosine"]
