"""The Typer application and its command groups; each `cli/*.py` module registers its verbs here."""

import typer
from rich.console import Console

app = typer.Typer(
    name="retinaug",
    help="Diffusion-based data augmentation for fundus-photo disease classification, measured honestly "
    "(patient-level splits, seeds with confidence intervals, controls, memorization audit).",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
prepare_app = typer.Typer(
    help="Ingest a dataset into RUN/data: manifest, patient-level split, rejected.csv.", no_args_is_help=True
)
manifest_app = typer.Typer(
    help="Inspect and convert manifests (per-class CSV export, concatenation).", no_args_is_help=True
)
app.add_typer(prepare_app, name="prepare")
app.add_typer(manifest_app, name="manifest")

# Command results (tables, paths) go to stdout through this one console; status lines go through logging (logs.py).
console = Console()
