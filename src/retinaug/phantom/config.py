"""The settings of `make_phantom`, written once: the verb, the `prepare phantom` CLI options and the pipeline's
`data:` section (`config.DataStage`, which inherits them) read them from here.

Light on purpose (pydantic only, no numpy, pandas or PIL): the CLI reads every verb's config class when it starts.
The class weights are checked where they are read (`parse_proportions`, also used by `plan_phantom`)."""

from __future__ import annotations

from pydantic import Field

from ..ingest.config import SplitConfig

MIN_SIZE = 16  # px: the smallest image side the renderer draws every finding at

# 'odir', 'uniform', 'N=2,D=1,G=1', or {class code: weight}; None means 'odir'
Proportions = str | dict[str, float] | None


class PhantomConfig(SplitConfig):
    """`make_phantom`: the embedded procedural dataset (n/2 patients x 2 eyes), split by patient."""

    n: int = Field(
        1000,
        description="Number of images (even: n/2 patients x 2 eyes); at least 12 x the classes generated (96 with all 8).",
    )
    size: int = Field(128, ge=MIN_SIZE, description=f"Image side in pixels (>= {MIN_SIZE}).")
    proportions: Proportions = Field(
        "odir",
        description="Class weights: 'odir' (ODIR-5K's patient counts), 'uniform', 'N=2,D=1,G=1' or a mapping "
        "{N: 2, D: 1, G: 1} (classes left out are not generated). Every class gets >= 6 patients.",
    )
