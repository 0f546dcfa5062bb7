"""Quality stages: similarity matcher and synthetic-data audit (memorization, FID/KID, precision/recall, class
fidelity, CAS)."""

from typing import TYPE_CHECKING

from ..lazy import lazy_exports

_EXPORTS = {
    ".audit": ("audit",),
    ".config": ("AuditConfig", "MatchConfig", "OverlapConfig"),
    ".fidelity": ("cas", "class_fidelity"),
    ".match": ("match", "topk_cosine"),
}
lazy_exports(__name__, _EXPORTS)
__all__ = ["AuditConfig", "MatchConfig", "OverlapConfig", "audit", "cas", "class_fidelity", "match", "topk_cosine"]

if TYPE_CHECKING:  # what type checkers and IDEs see
    from .audit import audit
    from .config import AuditConfig, MatchConfig, OverlapConfig
    from .fidelity import cas, class_fidelity
    from .match import match, topk_cosine
