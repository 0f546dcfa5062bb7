"""Pipeline config: presets, YAML merge, --set overrides, and validation errors that name the key path."""

from __future__ import annotations

import pytest
import yaml
from typer.testing import CliRunner

from retinaug.cli import app
from retinaug.config import PRESETS, apply_set, load_config
from retinaug.errors import RetinaugError
from retinaug.pipeline import resolve


def _write(tmp_path, data) -> str:
    p = tmp_path / "cfg.yaml"
    p.write_text(yaml.safe_dump(data))
    return str(p)


def test_unknown_key_names_its_path(tmp_path):
    path = _write(tmp_path, {"experiments": {"train": {"epocs": 3}}, "generatr": {}})
    with pytest.raises(RetinaugError) as err:
        load_config(path)
    msg = str(err.value)
    assert "experiments.train.epocs: unknown key" in msg
    assert "generatr: unknown key" in msg


@pytest.mark.parametrize(
    "data, fragment",
    [
        ({"data": {"source": "kaggle"}}, "data.source: Input should be 'phantom', 'odir' or 'folder'"),
        (
            {"experiments": {"train": {"epochs": 0}}},
            "experiments.train.epochs: Input should be greater than or equal to 1",
        ),
        ({"experiments": {"sets": ["paper-9class"]}}, "unknown scenario set(s) ['paper-9class']"),
        (
            {"experiments": {"scenarios": [{"name": "x", "task": "G,C", "synthetic_classes": ["N"]}]}},
            "synthetic_classes ['N'] are not in task G,C",
        ),
        ({"label": {"threshold": 2}}, "label.threshold: Input should be less than or equal to 1 (got 2)"),
    ],
)
def test_bad_values(tmp_path, data, fragment):
    with pytest.raises(RetinaugError) as err:
        load_config(_write(tmp_path, data))
    assert fragment in str(err.value)


def test_set_overrides_and_merge_order(tmp_path):
    path = _write(tmp_path, {"experiments": {"seeds": 4, "train": {"epochs": 2}}, "name": "mine"})
    cfg = load_config(
        path,
        preset="demo",
        overrides=[
            "experiments.seeds=[0, 5]",
            "experiments.train.backbone=resnet18",
            "synthetic.ratio=0.5",
            "selection.enabled=false",
        ],
    )
    assert cfg.name == "mine"  # file over preset
    assert cfg.experiments.train.epochs == 2 and cfg.experiments.train.size == 32  # file + preset merged per key
    assert cfg.experiments.seed_list == [0, 5]  # --set over file, parsed as YAML
    assert (
        cfg.experiments.train.backbone == "resnet18" and cfg.synthetic.ratio == 0.5 and cfg.selection.enabled is False
    )
    with pytest.raises(RetinaugError, match="expected KEY=VALUE"):
        apply_set({}, "experiments.seeds")
    with pytest.raises(RetinaugError, match="name is not a section"):
        apply_set({"name": "x"}, "name.first=1")
    with pytest.raises(RetinaugError, match="experiments.trian: unknown key"):
        load_config(overrides=["experiments.trian.epochs=1"])
    with pytest.raises(RetinaugError, match="unknown preset 'fast'"):
        load_config(preset="fast")


def test_precision_no_reads_as_written_in_a_file_and_in_set(tmp_path):
    """YAML 1.1 turns a bare `no` into False; the documented value `no` (fp32) must work unquoted, `yes` stays an error."""
    path = tmp_path / "cfg.yaml"
    path.write_text("generator:\n  ddpm:\n    mixed_precision: no\nlabeler:\n  train:\n    mixed_precision: no\n")
    cfg = load_config(path, preset="demo", overrides=["synthetic.precision=no", "experiments.train.mixed_precision=no"])
    assert (
        cfg.generator.ddpm.mixed_precision,
        cfg.labeler.train.mixed_precision,
        cfg.synthetic.precision,
        cfg.experiments.train.mixed_precision,
    ) == ("no", "no", "no", "no")
    with pytest.raises(
        RetinaugError, match=r"synthetic.precision: Input should be 'auto', 'no', 'fp16' or 'bf16' \(got True\)"
    ):
        load_config(preset="demo", overrides=["synthetic.precision=yes"])


def test_presets_valid_and_resolved(tmp_path):
    for name in PRESETS:
        load_config(preset=name)
    cfg = resolve(load_config(preset="demo"))
    assert cfg.synthetic.classes == ["G", "C", "A", "H", "M"]  # what the demo's synthetic scenarios use
    assert cfg.synthetic.ratio == pytest.approx(2 * 1.25)  # margin x largest multiplier (x2)
    assert cfg.generator.ddpm.train_classes == "all"  # learns every class; samples the scenarios' classes
    narrow = resolve(load_config(preset="demo", overrides=["generator.ddpm.train_classes=synthetic"]))
    assert narrow.generator.ddpm.train_classes == ["G", "C", "A", "H", "M"]
    with pytest.raises(
        RetinaugError, match=r"synthetic.classes G, C are not in generator train_classes \['A', 'H', 'M'\]"
    ):
        resolve(load_config(preset="demo", overrides=["generator.ddpm.train_classes=[A,H,M]"]))
    with pytest.raises(RetinaugError, match="sample_steps -> steps"):  # sampling settings moved to synthetic:
        load_config(preset="demo", overrides=["generator.ddpm.sample_steps=10"])
    assert load_config(preset="demo", overrides=["generator.method=ldm"]).generator.method_config().size == 128
    assert cfg.augment.ratio == 1 and cfg.augment.classes == ["G", "C", "A", "H", "M"]
    odir = load_config(preset="odir-cpu", overrides=["data.path=../shared/data/odir5k-256"])
    assert resolve(odir).data.path.startswith("/")  # made absolute against the CWD
    assert (odir.synthetic.mode, odir.synthetic.strength, odir.synthetic.precision) == (
        "img2img",
        0.5,
        "auto",
    )  # BENCHMARKS.md


def test_init_config_round_trip(tmp_path):
    out = tmp_path / "demo.yaml"
    res = CliRunner().invoke(app, ["init-config", "--preset", "demo", "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert load_config(out) == load_config(preset="demo")
    text = out.read_text()
    assert "ema_decay" in text and "label_smoothing" in text  # every default written out
    again = CliRunner().invoke(app, ["init-config", "--preset", "demo", "-o", str(out)])
    assert again.exit_code != 0 and "exists" in again.output


def test_data_section_carries_every_ingest_option_by_its_keyword_name():
    from retinaug.config import INGEST_OPTIONS, SOURCE_OPTIONS, DataStage
    from retinaug.ingest import FolderConfig, OdirConfig
    from retinaug.phantom import PhantomConfig

    for source, model in (("odir", OdirConfig), ("folder", FolderConfig)):
        keywords = set(model.model_fields)
        assert keywords == {"val", "test", "seed", *INGEST_OPTIONS[source]}, (
            f"{model.__name__} options missing from data: or INGEST_OPTIONS"
        )
        assert issubclass(DataStage, model) and keywords <= set(DataStage.model_fields)  # passed whole to the verb
        defaults = {k: model.model_fields[k].default for k in keywords}
        assert defaults == {k: DataStage.model_fields[k].default for k in keywords}  # a run ingests as `prepare` does
    assert issubclass(DataStage, PhantomConfig)
    assert set(PhantomConfig.model_fields) == {"val", "test", "seed", *SOURCE_OPTIONS["phantom"]}
    cfg = load_config(
        overrides=["data.source=folder", "data.path=x", "data.mapping=glau=g,Katarakt=C", r"data.patient_regex=^(\d+)_"]
    )
    assert cfg.data.model_dump(include=set(FolderConfig.model_fields)) == {  # what prepare_folder reads of it
        "val": 0.15,
        "test": 0.15,
        "seed": 0,
        "mapping": {"glau": "G", "katarakt": "C"},
        "patient_regex": r"^(\d+)_",
        "unmatched": "own-patient",
        "min_size": 64,
        "workers": None,
    }


@pytest.mark.parametrize(
    "sets, fragment",
    [
        (["data.labels=keywords"], "data: labels (odir only): not read when source is phantom"),
        (["data.source=odir", "data.mapping={glau: G}"], "mapping (folder only): not read when source is odir"),
        (
            ["data.source=folder", "data.allow_multilabel=true"],
            "allow_multilabel (odir only): not read when source is folder",
        ),
        (["data.min_size=32"], "min_size (odir/folder only)"),
        (["data.source=folder", "data.mapping={glau: Q}"], "data.mapping: --map glau=Q: unknown class code"),
        (["data.source=folder", "data.patient_regex=(x"], "data.patient_regex: '(x' is not a valid regular expression"),
        (["data.source=odir", "data.labels=eyes"], "data.labels: Input should be 'kaggle' or 'keywords'"),
    ],
)
def test_ingest_options_are_checked_up_front(sets, fragment):
    with pytest.raises(RetinaugError) as err:
        load_config(overrides=sets)
    assert fragment in str(err.value)


def test_operational_settings_do_not_change_a_stage_hash():
    from retinaug.stages import config_hash

    base = load_config(overrides=["data.source=odir", "data.path=x"])
    assert config_hash(base.data) == config_hash(
        load_config(overrides=["data.source=odir", "data.path=x", "data.workers=3"]).data
    )
    assert config_hash(base.data) != config_hash(
        load_config(overrides=["data.source=odir", "data.path=x", "data.labels=keywords"]).data
    )
