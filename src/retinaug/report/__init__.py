"""`retinaug report RUN`: one self-contained HTML page (figures embedded as base64) from a run folder.

Each section is a function in its own module (data, generation, selection, quality, results, provenance) that
reads only the run-folder files of the stage it shows and is registered in `SECTIONS` with one line. A section
whose files are missing says "not run", and a section that cannot be drawn says why, so a partial run still gets
a report.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup

from ..cards import refresh_model_card
from ..errors import RetinaugError
from ..folds import is_pooled, pool_folds
from ..io import write_text_atomic
from ..lock import run_lock
from ..ownership import owned_output
from ..stage_order import stage_names
from .data import section_data, section_samples
from .fidelity import section_fidelity
from .generation import section_generator, section_labeling
from .html import p
from .provenance import section_provenance
from .quality import section_fid, section_similarity
from .results import section_confusion, section_folds, section_recall, section_scenarios, section_training
from .selection import section_selection

log = logging.getLogger("retinaug.report")

SECTIONS: list[tuple[str, str, Callable[[Path], Markup | None]]] = [
    ("scenarios", "Scenario results", section_scenarios),
    ("recall", "Per-class recall by scenario", section_recall),
    ("data", "Data overview", section_data),
    ("samples", "Real vs synthetic samples", section_samples),
    ("generator", "Generator training", section_generator),
    ("labeling", "Labeling acceptance", section_labeling),
    ("selection", "t-SNE selection", section_selection),
    ("similarity", "Similarity and memorization", section_similarity),
    ("fid", "FID / KID", section_fid),
    ("fidelity", "Class fidelity and CAS", section_fidelity),
    ("confusion", "Confusion matrices", section_confusion),
    ("training", "Training curves", section_training),
    ("provenance", "Provenance", section_provenance),
]
# A k-fold run's own report: what is pooled over the folds; each fold's report has the rest.
POOLED_SECTIONS = [s for s in SECTIONS if s[0] in ("scenarios", "recall", "confusion", "training", "provenance")]
POOLED_SECTIONS.insert(2, ("folds", "Cross-validation folds", section_folds))


def build_report(run: str | Path) -> Path:
    """Render RUN/report/index.html from whatever the run folder holds (under the run lock); returns its path. The
    page names the run folder, not its path (a report gets shared: this disk's layout is nobody's business)."""
    run = Path(run)
    if not run.is_dir():
        raise RetinaugError(f"run folder {run} not found (make one with `retinaug run CONFIG --out {run}`)")
    stages = [s for s in stage_names() if s != "report"]
    if not (run / "config.yaml").is_file() and not any((run / stage).is_dir() for stage in stages):
        raise RetinaugError(
            f"{run} is not a run folder: it has no config.yaml and none of the stage folders {', '.join(stages)}; "
            "give the folder passed to `retinaug run --out` (or one holding e.g. data/ from `retinaug prepare`)"
        )
    with run_lock(run, "report"), owned_output(run / "report", "report folder"):  # writes only what retinaug owns
        try:  # the generator's card gets the audit figures once the quality stage measured its images
            refresh_model_card(run)
        except Exception as exc:  # a card that cannot be written must not cost the report
            log.warning("generator model card not refreshed: %s", exc)
        pooled = is_pooled(run)
        if pooled:  # the folds' experiments pooled into RUN/pooled (seconds), the per-fold sections in the fold reports
            with owned_output(run / "pooled", "pooled folder"):
                pool_folds(run)
        rendered = []
        for key, title, fn in POOLED_SECTIONS if pooled else SECTIONS:
            try:
                body, state = fn(run), "ok"
            except Exception as exc:  # a malformed stage output must not cost the rest of the report
                log.warning("report section %s failed: %s", key, exc)
                body, state = p(f"could not be drawn: {type(exc).__name__}: {exc}"), "error"
            if body is None:
                body, state = p("not run (its stage outputs are missing in this run folder)"), "missing"
            rendered.append({"id": key, "title": title, "body": body, "state": state})
        env = Environment(loader=PackageLoader("retinaug", "report/templates"), autoescape=select_autoescape(["html"]))
        cfg = run / "config.yaml"
        name = run.name
        if cfg.is_file():
            import yaml

            name = (yaml.safe_load(cfg.read_text()) or {}).get("name", name)
        html = env.get_template("index.html").render(
            name=name, run=run.resolve().name, sections=rendered, created=time.strftime("%Y-%m-%d %H:%M:%S %Z")
        )
        path = write_text_atomic(run / "report" / "index.html", html)  # mode as the umask says, like every output
    return path
