"""One config path for every verb (cli/settings.py): --config FILE, then the named options (generated from the config's
fields), then --set; --help lists every field; the CLI starts without torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from conftest import make_dataset
from pydantic import BaseModel, Field
from typer.testing import CliRunner

from retinaug.classify.config import LabelConfig, TrainConfig
from retinaug.cli import app
from retinaug.cli.settings import settings

runner = CliRunner()


class Inner(BaseModel):
    depth: int = Field(2, description="How deep.")


class Toy(BaseModel):
    model_config = {"extra": "forbid"}
    count: int = Field(3, ge=1, description="How many.")
    name: str = Field("a", description="What it is called.")
    flag: bool = Field(False, description="Whether it is on.")
    codes: tuple[str, ...] = Field(("G",), description="Codes, comma-separated on the command line.")
    mode: str = Field("fast", description="fast or slow.")
    inner: Inner = Field(default_factory=Inner, description="A nested section.")


def toy_app() -> tuple[typer.Typer, list]:
    """A one-verb app whose verb records the config it got."""
    got: list = []
    toy = typer.Typer()

    @toy.command()
    @settings(Toy, ("count", "name", "flag"), defaults={"name": "b"}, example="inner.depth=5")
    def verb(out: Path = typer.Option(..., "--out"), config: Toy = None) -> None:  # type: ignore[assignment]
        """Do the toy thing."""
        got.append((out, config))

    @toy.command()
    def other() -> None:  # a second verb, so typer keeps the verb's name on the command line
        pass

    return toy, got


def test_options_file_and_set_merge_in_order(tmp_path: Path):
    toy, got = toy_app()
    file = tmp_path / "toy.yaml"
    file.write_text("count: 7\nname: from-file\nmode: slow\ninner: {depth: 4}\n")
    result = runner.invoke(toy, ["verb", "--out", "x"])
    assert result.exit_code == 0, result.output
    assert got[-1][1] == Toy(name="b")  # the verb's default (b) over the model's (a)
    result = runner.invoke(toy, ["verb", "--out", "x", "--config", str(file)])
    assert got[-1][1] == Toy(count=7, name="from-file", mode="slow", inner=Inner(depth=4))
    # a named option beats the file; --set beats both and reaches nested fields
    args = ["verb", "--out", "x", "--config", str(file), "--count", "9", "--flag", "--set", "count=11"]
    result = runner.invoke(toy, [*args, "--set", "inner.depth=5", "--set", "codes=[G, C]"])
    assert result.exit_code == 0, result.output
    assert got[-1][1] == Toy(count=11, name="from-file", flag=True, mode="slow", codes=("G", "C"), inner=Inner(depth=5))
    assert got[-1][0] == Path("x")


def test_bad_settings_are_named_not_tracebacks(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a short path: the error panel folds a long one across lines
    toy, _ = toy_app()
    result = runner.invoke(toy, ["verb", "--out", "x", "--count", "0", "--set", "colour=red"])
    assert result.exit_code != 0
    assert "count: Input should be greater than or equal to 1" in result.output
    assert "colour: unknown key" in result.output
    assert "Traceback" not in result.output
    result = runner.invoke(toy, ["verb", "--out", "x", "--config", "missing.yaml"])
    assert result.exit_code != 0 and "missing.yaml" in result.output


def test_help_lists_the_options_and_every_other_field():
    toy, _ = toy_app()
    result = runner.invoke(toy, ["verb", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    text = result.output
    for option in ("--config", "--count", "--name", "--flag", "--no-flag", "--set"):
        assert option in text
    assert "What it is called. [default: b]" in text  # the verb's default is the one shown
    # the fields without an option of their own are listed with description and default, nested ones dotted
    for line in ("codes: Codes, comma-separated on the command line. [default: G]", "mode: fast or slow. [default: fast]",
                 "inner.depth: How deep. [default: 2]"):  # fmt: skip
        assert line in text
    assert "count: How many." not in text  # an option is not listed twice
    assert "inner.depth=5" in text  # the --set example


def test_a_field_that_is_not_a_config_field_is_refused_when_declared():
    with pytest.raises(ValueError, match="no field"):
        settings(Toy, ("cuont",))


@pytest.mark.parametrize(
    "verb, fields",
    [
        (["train"], TrainConfig.model_fields),
        (["label"], LabelConfig.model_fields),
    ],
)
def test_verb_help_names_every_field_of_its_config(verb: list[str], fields: dict):
    text = runner.invoke(app, [*verb, "--help"], env={"COLUMNS": "300"}).output
    assert "--config" in text and "--set" in text
    for name in fields:
        assert f"--{name.replace('_', '-')}" in text or f"{name}:" in text, name


def test_train_reads_the_same_settings_from_a_file_options_and_set(tmp_path: Path):
    """`retinaug train` with a file (TrainConfig fields under `classifier:`), an option and --set: model.json records
    the merged config."""
    data = tmp_path / "data"
    make_dataset(data, classes=("G", "C", "A"), patients_per_class=5, size=32)
    file = tmp_path / "train.yaml"
    file.write_text("classifier:\n  recipe: none\n  size: 32\n  epochs: 3\n  task: G,C,A\n  mixed_precision: no\n")
    out = tmp_path / "model"
    args = ["train", "--data", str(data), "--out", str(out), "--config", str(file), "--epochs", "1"]
    result = runner.invoke(app, [*args, "--set", "batch_size=8", "--set", "label_smoothing=0"])
    assert result.exit_code == 0, result.output
    cfg = json.loads((out / "model.json").read_text())["config"]
    assert (cfg["recipe"], cfg["size"], cfg["epochs"], cfg["batch_size"], cfg["label_smoothing"]) == (None, 32, 1, 8, 0)
    assert cfg["mixed_precision"] == "no" and cfg["task"] == "G,C,A"


def test_the_cli_starts_without_torch_or_diffusers():
    """Every verb's config class is read at start (its options are generated from it): none may load the heavy stack
    (torch alone takes seconds; pandas and matplotlib half a second together)."""
    code = (
        "import sys; import retinaug.cli; from retinaug.cli.app import app; import typer.main;"
        "typer.main.get_command(app);"
        "heavy = ('torch', 'timm', 'diffusers', 'sklearn', 'accelerate', 'pandas', 'matplotlib');"
        "print(sorted(m for m in heavy if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
