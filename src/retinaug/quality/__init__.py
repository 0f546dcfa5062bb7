"""Quality stages: similarity matcher and synthetic-data audit (memorization, FID/KID, precision/recall, class
fidelity, CAS)."""

from .audit import audit
from .config import AuditConfig
from .fidelity import cas, class_fidelity
from .match import match, topk_cosine

__all__ = ["AuditConfig", "audit", "cas", "class_fidelity", "match", "topk_cosine"]
