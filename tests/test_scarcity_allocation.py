"""Issue 28, items 4 and 5: how a scenario spreads its synthetic rows over the classes (allocation proportional,
balanced, need) and real_fraction (a nested, patient-level, class-stratified subsample of the real train patients),
the scarcity set, hashing and resume, and the report's macro-F1-against-fraction figure. Compositions on tables
of made-up paths; the runner end to end with real tiny fits (16 px, resnet10t, 2 epochs) on a tiny on-disk dataset."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import make_dataset
from PIL import Image

from retinaug.classify import TrainConfig
from retinaug.errors import RetinaugError
from retinaug.experiments import (
    SCENARIO_SETS,
    ExperimentConfig,
    Scenario,
    accepted_synthetic,
    aggregate,
    baseline_of,
    compose,
)
from retinaug.experiments.runner import plan_fits, run_experiments
from retinaug.io import sha256_text
from retinaug.manifest import new_manifest
from retinaug.report.results import section_scenarios
from retinaug.stages import config_hash, result_settings

FIVE = ("G", "C", "A", "H", "M")
TINY = dict(backbone="resnet10t", size=16, epochs=2, batch_size=8, patience=5, augment=False)
FRACTIONS = (0.1, 0.25, 0.5, 1.0)


def _row(path: str, label: str, patient: str, split: str = "train", origin: str = "real", **extra) -> dict:
    return dict(
        path=path, label=label, patient_id=patient, eye="unknown", split=split, origin=origin, source="t", **extra
    )


@pytest.fixture(scope="module")
def data() -> pd.DataFrame:
    """Train patients of two eyes each: 20 G, 12 C, 8 A, 4 H, 6 M, and 2 with a G left eye and an M right eye (their
    stratum is M, the rarer class by image count: 14 M images against 42 G); 2 val and 3 test patients per class."""
    rows = []
    for code, n in zip(FIVE, (20, 12, 8, 4, 6)):
        for i in range(n):
            rows += [_row(f"/d/train/{code}{i}_{eye}.png", code, f"{code}{i}") for eye in ("l", "r")]
        for split, k in (("val", 2), ("test", 3)):
            rows += [_row(f"/d/{split}/{code}{i}.png", code, f"{split}-{code}{i}", split) for i in range(k)]
    for i in range(2):
        rows += [_row(f"/d/train/GM{i}_l.png", "G", f"GM{i}"), _row(f"/d/train/GM{i}_r.png", "M", f"GM{i}")]
    return new_manifest(rows)


@pytest.fixture(scope="module")
def pools(data) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(synthetic, traditional): 2 accepted img2img children of every real train image (their `parent`) and 3 txt2img
    images per class (no parent); 3 traditional copies of every real train image."""
    train = data[data["split"] == "train"]
    syn = [
        _row(
            f"/s/{Path(r.path).stem}_{k}.png",
            r.label,
            f"syn-{Path(r.path).stem}_{k}",
            origin="synthetic",
            parent=r.path,
            accepted=True,
        )
        for r in train.itertuples()
        for k in range(2)
    ]
    syn += [
        _row(f"/s/txt_{c}{k}.png", c, f"syn-txt-{c}{k}", origin="synthetic", accepted=True)
        for c in FIVE
        for k in range(3)
    ]
    trad = pd.concat(
        [train.assign(origin="traditional", parent=train["path"], transform=t) for t in ("hflip", "vflip", "rot90")]
    )
    return accepted_synthetic(new_manifest(syn)), new_manifest(trad.to_dict("records"))


def _patients(train: pd.DataFrame) -> set[str]:
    return set(train.loc[train["origin"] == "real", "patient_id"])


def _stratum(data: pd.DataFrame) -> pd.Series:
    """The rule stated in real_subsample: a train patient's rarest class by image count among the train rows."""
    train = data[data["split"] == "train"]
    rarity = train["label"].map(train["label"].value_counts())
    return train.assign(rarity=rarity).sort_values(["rarity", "label"]).groupby("patient_id")["label"].first()


# ---------------------------------------------------------------- real_fraction


def test_real_fraction_is_nested_patient_level_stratified_and_the_same_for_every_seed(data):
    stratum = _stratum(data)
    assert stratum[["GM0", "GM1"]].tolist() == ["M", "M"]
    _, full_val, full_test, _ = compose(Scenario(name="all"), 0, data)
    kept = {}
    for f in FRACTIONS:
        by_seed = [compose(Scenario(name=f"f{f}", real_fraction=f), seed, data) for seed in (0, 3)]
        (train, val, test, counts), (train3, *_) = by_seed
        kept[f] = _patients(train)
        assert (
            _patients(train3) == kept[f] and train["path"].tolist() == train3["path"].tolist()
        )  # fit seeds: same rows
        real_train = data[(data["split"] == "train")]
        assert set(train["path"]) == set(
            real_train.loc[real_train["patient_id"].isin(kept[f]), "path"]
        )  # both eyes kept
        pd.testing.assert_frame_equal(val, full_val)
        pd.testing.assert_frame_equal(test, full_test)
        per_stratum = stratum[sorted(kept[f])].value_counts()
        for code, n in stratum.value_counts().items():
            assert per_stratum[code] == max(1, math.ceil(round(f * n, 9)))  # about f of each class, at least one
        assert (
            dict(zip(counts["class"], counts["real"]))
            == train["label"].value_counts().reindex(FIVE, fill_value=0).to_dict()
        )
    assert kept[0.1] < kept[0.25] < kept[0.5] < kept[1.0] == set(stratum.index)


def test_multipliers_follow_the_subsample_and_children_of_left_out_patients_are_excluded(data, pools, caplog):
    synthetic, traditional = pools
    sc = Scenario(name="s", synthetic=1, traditional=1, real_fraction=0.25)
    with caplog.at_level(logging.INFO, logger="retinaug.experiments"):
        train, _, _, counts = compose(sc, 0, data, synthetic, traditional)
    c = counts.set_index("class")
    real = train[train["origin"] == "real"]
    left_out = data[(data["split"] == "train") & ~data["path"].isin(real["path"])]
    for code in FIVE:
        n_real = int((real["label"] == code).sum())
        assert (
            c.loc[code, ["real", "synthetic_requested", "traditional_requested", "traditional"]].tolist()
            == [n_real] * 4
        )
        assert c.loc[code, "synthetic"] == n_real  # 2 children per kept image and 3 txt2img: enough
        gone = int((left_out["label"] == code).sum())
        assert c.loc[code, ["synthetic_left_out", "traditional_left_out"]].tolist() == [2 * gone, 3 * gone]
    added = train[train["origin"] != "real"]
    assert added["parent"].isna().sum() > 0  # txt2img rows (no parent) stay usable
    assert added["parent"].dropna().isin(real["path"]).all()  # no row made from a left-out patient's image
    assert f"left out: {2 * len(left_out)} synthetic and {3 * len(left_out)} traditional rows" in caplog.text
    full = compose(Scenario(name="f", synthetic=1, traditional=1), 0, data, synthetic, traditional)[3]
    assert not {"synthetic_left_out", "traditional_left_out"} & set(full.columns)  # composition.csv as before at 1


# ---------------------------------------------------------------- allocation

REAL = {"G": 12, "C": 6, "A": 4, "H": 2, "M": 8}


@pytest.fixture(scope="module")
def counted() -> tuple[pd.DataFrame, pd.DataFrame]:
    """(data, synthetic): REAL train images per class (one patient each), one val and test image per class; 20 accepted
    synthetic images per class but only 6 of H."""
    rows = [_row(f"/d/{c}{i}.png", c, f"{c}{i}") for c, n in REAL.items() for i in range(n)]
    rows += [_row(f"/d/{s}{c}.png", c, f"{s}{c}", s) for c in REAL for s in ("val", "test")]
    syn = [
        _row(f"/s/{c}{i}.png", c, f"s{c}{i}", origin="synthetic", accepted=True)
        for c in REAL
        for i in range(6 if c == "H" else 20)
    ]
    return new_manifest(rows), accepted_synthetic(new_manifest(syn))


def _requested(counts: pd.DataFrame) -> dict[str, int]:
    return dict(zip(counts["class"], counts["synthetic_requested"]))


def test_balanced_fills_the_rarest_classes_up_to_one_level_with_proportionals_total(counted):
    """x0.5 asks 6+3+2+1+4 = 16 rows proportionally; balanced fills C, A, H and M up to 9 (3+5+7+1 = 16), G (12, above
    the level) gets none. H's pool has 6 of its 7: a shortfall, logged and recorded as for proportional, not moved."""
    data, synthetic = counted
    proportional = compose(Scenario(name="p", synthetic=0.5), 0, data, synthetic)[3]
    assert _requested(proportional) == {"G": 6, "C": 3, "A": 2, "H": 1, "M": 4}
    train, _, _, counts = compose(Scenario(name="b", synthetic=0.5, allocation="balanced"), 0, data, synthetic)
    assert _requested(counts) == {"G": 0, "C": 3, "A": 5, "H": 7, "M": 1}
    assert counts["synthetic_requested"].sum() == proportional["synthetic_requested"].sum()
    c = counts.set_index("class")
    assert c.loc["H", ["synthetic", "synthetic_shortfall"]].tolist() == [6, 1]
    assert (c["real"] + c["synthetic_requested"]).tolist() == [12, 9, 9, 9, 9]
    assert train[train["origin"] == "synthetic"]["label"].value_counts().to_dict() == {"C": 3, "A": 5, "H": 6, "M": 1}


def test_balanced_rounds_by_largest_remainders_and_keeps_chosen_classes():
    """Level 8.75 (x0.5 of 10, 7, 5, 3, 4: 16 rows): 1.75, 3.75, 5.75, 4.75 -> 1, 3, 5, 4 and the 3 rows left go to the
    largest remainders (ties: the task's earlier classes). Only synthetic_classes get rows."""
    from retinaug.experiments.scenarios import allocate

    real = pd.Series({"G": 10, "C": 7, "A": 5, "H": 3, "M": 4})
    assert allocate(Scenario(name="b", synthetic=0.5, allocation="balanced"), "synthetic", real).to_dict() == {
        "G": 0,
        "C": 2,
        "A": 4,
        "H": 6,
        "M": 4,
    }
    only = Scenario(name="o", synthetic=1, allocation="balanced", synthetic_classes=["H", "M"])
    assert allocate(only, "synthetic", real).to_dict() == {
        "G": 0,
        "C": 0,
        "A": 0,
        "H": 4,
        "M": 3,
    }  # 7 rows: both end at 7
    assert allocate(only, "traditional", real).sum() == 0  # allocation spreads synthetic rows only


def test_need_shares_by_one_minus_recall(counted):
    """Shares 1 - recall = 0, .5, .75, 1, .25 of 16 rows: 0, 3.2, 4.8, 6.4, 1.6 -> 0, 3, 5, 6, 2."""
    data, synthetic = counted
    recall = {"G": 1.0, "C": 0.5, "A": 0.25, "H": 0.0, "M": 0.75}
    counts = compose(Scenario(name="n", synthetic=0.5, allocation="need"), 0, data, synthetic, recall=recall)[3]
    assert _requested(counts) == {"G": 0, "C": 3, "A": 5, "H": 6, "M": 2} and counts["synthetic_requested"].sum() == 16
    assert dict(zip(counts["class"], counts["real_val_recall"])) == recall
    perfect = compose(
        Scenario(name="n", synthetic=0.5, allocation="need"), 0, data, synthetic, recall=dict.fromkeys(REAL, 1.0)
    )[3]
    assert _requested(perfect) == {"G": 6, "C": 3, "A": 2, "H": 1, "M": 4}  # nothing to share by: proportional
    with pytest.raises(RetinaugError, match="recall of class.es. H .no validation images"):
        compose(
            Scenario(name="n", synthetic=0.5, allocation="need"), 0, data, synthetic, recall={c: 0.5 for c in "GCAM"}
        )
    with pytest.raises(RetinaugError, match="runs? it through run_experiments"):
        compose(Scenario(name="n", synthetic=0.5, allocation="need"), 0, data, synthetic)


def _fake_finished(
    fit, val_recall: dict[str, float], other_epoch: dict[str, float], test_recall: dict[str, float]
) -> None:
    """A finished real-only fit: model.json whose best epoch (2) has `val_recall` and epoch 1 `other_epoch`; metrics.json
    (test) with `test_recall`; recipe.json with the planned key."""
    fit.folder.mkdir(parents=True)
    history = [
        {"epoch": e, "val_macro_f1": 0.5, **{f"val_recall_{c}": v for c, v in r.items()}}
        for e, r in ((1, other_epoch), (2, val_recall))
    ]
    (fit.folder / "model.json").write_text(json.dumps({"best_epoch": 2, "history": history}))
    (fit.folder / "metrics.json").write_text(
        json.dumps({"macro_f1": 0.5, "per_class": {c: {"recall": v} for c, v in test_recall.items()}})
    )
    (fit.folder / "recipe.json").write_text(json.dumps(fit.recipe))


def test_need_is_planned_after_its_real_fit_and_reads_its_validation_recall_never_test(counted, tmp_path):
    data, synthetic = counted
    cfg = ExperimentConfig(
        sets=[],
        seeds=[0, 1],
        train=TrainConfig(**TINY),
        scenarios=[Scenario(name="need", synthetic=0.5, allocation="need"), Scenario(name="real")],
    )
    first, _ = plan_fits(cfg, data, tmp_path, synthetic)
    assert [f.name for f in first] == ["real/seed0", "real/seed1"]  # need waits for the real-only fits
    with pytest.raises(RetinaugError, match="real/seed0 has not finished"):
        plan_fits(cfg, data, tmp_path, synthetic, first_pass=first)
    val = {"G": 1.0, "C": 0.5, "A": 0.25, "H": 0.0, "M": 0.75}
    _fake_finished(
        first[0],
        val,
        other_epoch=dict.fromkeys(REAL, 0.0),
        test_recall={"G": 0.0, "C": 1.0, "A": 1.0, "H": 1.0, "M": 0.0},
    )
    _fake_finished(first[1], dict.fromkeys(REAL, 0.5), other_epoch=val, test_recall=val)
    second, (composition,) = plan_fits(cfg, data, tmp_path, synthetic, first_pass=first)
    assert [f.name for f in second] == ["need/seed0", "need/seed1"]
    assert _requested(composition) == {"G": 0, "C": 3, "A": 5, "H": 6, "M": 2}  # seed 0's best-epoch validation recall
    by_seed = [{r["class"]: r["synthetic_requested"] for r in f.recipe["counts"]} for f in second]
    assert by_seed[1] == {
        "G": 4,
        "C": 3,
        "A": 3,
        "H": 3,
        "M": 3,
    }  # seed 1: equal needs, 3.2 each; the tie to the first class
    (first[0].folder / "model.json").write_text(
        json.dumps({"best_epoch": 1, "history": [{"epoch": 1, "val_macro_f1": 0.5}]})
    )
    with pytest.raises(RetinaugError, match="records no per-class validation recall .an earlier retinaug"):
        plan_fits(cfg, data, tmp_path, synthetic, first_pass=first)


# ---------------------------------------------------------------- validation, the scarcity set, hashing


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"allocation": "balanced"}, "allocation: balanced needs synthetic rows"),
        ({"synthetic": 1, "allocation": "most"}, "'proportional', 'balanced' or 'need'"),
        ({"real_fraction": 0}, "greater than 0"),
        ({"real_fraction": 1.5}, "less than or equal to 1"),
        (
            {"synthetic": 1, "selection": True, "real_fraction": 0.5},
            "the t-SNE selection picks from every train patient",
        ),
    ],
)
def test_scenario_fields_are_validated(fields, message):
    with pytest.raises(ValueError, match=message):
        Scenario(name="s", **fields)


def test_run_level_checks():
    with pytest.raises(ValueError, match=r"allocation: need shares the synthetic rows of \['n'\] .* this run has none"):
        ExperimentConfig(
            sets=[],
            scenarios=[Scenario(name="n", synthetic=1, allocation="need"), Scenario(name="r", real_fraction=0.5)],
        )
    with pytest.raises(ValueError, match="scenario r: real_fraction 0.5 with train.init: all-classes"):
        ExperimentConfig(
            sets=[], scenarios=[Scenario(name="r", real_fraction=0.5)], train=TrainConfig(init="all-classes")
        )
    cfg = ExperimentConfig(
        sets=["scarcity"],
        only=["n"],
        scenarios=[
            Scenario(name="n", synthetic=1, allocation="need", real_fraction=0.5, baseline="5class-syn-x1-50pct")
        ],
    )
    assert [s.name for s in cfg.resolve()] == [
        "5class-real-50pct",
        "5class-syn-x1-50pct",
        "n",
    ]  # only keeps the need reference


def test_scarcity_set_resolves_with_baselines_of_the_same_fraction():
    cfg = ExperimentConfig(
        sets=["scarcity", "paper-5class-vs-traditional", "synthetic-use"]
    )  # shared f = 1 names agree
    resolved = cfg.resolve()
    scarcity = SCENARIO_SETS["scarcity"]
    assert len(scarcity) == 12 and {s.name for s in scarcity} <= {s.name for s in resolved}
    for f in FRACTIONS:
        tag = "" if f == 1 else f"-{round(100 * f)}pct"
        real, syn, trad = (
            next(s for s in resolved if s.name == n)
            for n in (f"5class-real{tag}", f"5class-syn-x1{tag}", f"5class-trad-x1{tag}")
        )
        assert [s.real_fraction for s in (real, syn, trad)] == [f] * 3 and real.real_only and real.task == "5-class"
        assert (syn.synthetic, syn.traditional, trad.synthetic, trad.traditional) == (1, 0, 0, 1)
        assert [baseline_of(s, resolved) for s in (real, syn, trad)] == [None, f"5class-real{tag}", f"5class-real{tag}"]
    custom = Scenario(
        name="half", synthetic=2, real_fraction=0.5
    )  # no baseline named: the real-only one of its fraction
    assert baseline_of(custom, resolved + [custom]) == "5class-real-50pct"


@pytest.mark.parametrize(
    "base, field, value",
    [
        ({"synthetic": 1}, "allocation", "balanced"),
        ({"synthetic": 1}, "allocation", "need"),
        ({}, "real_fraction", 0.5),
        ({"traditional": 1}, "real_fraction", 0.1),
    ],
)
def test_new_fields_change_the_hash_and_their_defaults_keep_it(base, field, value):
    changed, default = Scenario(name="s", **base, **{field: value}), Scenario(name="s", **base)
    assert config_hash(changed.recipe()) != config_hash(default.recipe())
    assert config_hash(default.recipe()) == config_hash(
        {k: v for k, v in default.recipe().items() if k not in ("allocation", "real_fraction")}
    )


def test_fit_keys_of_default_scenarios_are_those_of_before(counted, tmp_path):
    data, synthetic = counted
    cfg = ExperimentConfig(sets=[], seeds=[0], scenarios=[Scenario(name="s", synthetic=1)], train=TrainConfig(**TINY))
    (planned,), _ = plan_fits(cfg, data, tmp_path, synthetic)
    recipe = {k: v for k, v in planned.recipe.items() if k not in ("key", "counts")}
    earlier = {
        **recipe,
        "scenario": {k: v for k, v in recipe["scenario"].items() if k not in ("allocation", "real_fraction")},
    }
    assert planned.recipe["key"] == sha256_text(json.dumps(result_settings(earlier), sort_keys=True))
    half = cfg.model_copy(update={"scenarios": [Scenario(name="s", synthetic=1, real_fraction=0.5)]})
    assert plan_fits(half, data, tmp_path, synthetic)[0][0].recipe["key"] != planned.recipe["key"]


# ---------------------------------------------------------------- end to end, resume and the report


@pytest.fixture(scope="module")
def on_disk(tmp_path_factory) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(data, synthetic): 3 classes x 4 train patients (2 eyes each) of 16 px images; 2 accepted img2img-like children
    (noisy copies, `parent` set) of every real train image."""
    root = tmp_path_factory.mktemp("scarce")
    data = make_dataset(root / "data", classes=("G", "C", "A"), patients_per_class=8, size=16)
    rng = np.random.default_rng(0)
    rows = []
    for parent in data[data["split"] == "train"].itertuples():
        for k in range(2):
            path = root / "syn" / f"{Path(parent.path).stem}_{k}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            pixels = np.asarray(Image.open(parent.path), dtype=float) + rng.normal(0, 10, (16, 16, 3))
            Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path)
            rows.append(
                _row(str(path), parent.label, f"syn-{path.stem}", origin="synthetic", parent=parent.path, accepted=True)
            )
    return data, new_manifest(rows)


def test_runner_scarcity_and_need_end_to_end_resume_and_report(on_disk, tmp_path):
    data, synthetic = on_disk
    task = {"task": "G,C,A"}
    scenarios = [
        Scenario(name="real", **task),
        Scenario(name="real-50", real_fraction=0.5, **task),
        Scenario(name="syn-50", synthetic=1, real_fraction=0.5, baseline="real-50", **task),
        Scenario(name="need", synthetic=1, allocation="need", **task),
    ]
    cfg = ExperimentConfig(sets=[], seeds=[0], n_boot=10, scenarios=scenarios, train=TrainConfig(**TINY))
    out = tmp_path / "run" / "experiments"
    summary = run_experiments(data, cfg, out, synthetic)
    meta = json.loads((out / "real" / "seed0" / "model.json").read_text())
    best = next(r for r in meta["history"] if r["epoch"] == meta["best_epoch"])
    comp = pd.read_csv(out / "composition.csv")
    assert comp["scenario"].drop_duplicates().tolist() == ["real", "real-50", "syn-50", "need"]  # the run's order
    need = comp[comp["scenario"] == "need"].set_index("class")
    assert need["real_val_recall"].to_dict() == pytest.approx({c: best[f"val_recall_{c}"] for c in "GCA"})
    assert need["synthetic_requested"].sum() == 3 * 8  # proportional's total: x1 of 8 images per class
    half = comp[comp["scenario"] == "syn-50"].set_index("class")
    assert (half["real"] == 4).all() and (half["synthetic"] == 4).all() and (half["synthetic_left_out"] == 8).all()
    assert set(summary["scenario"]) == {s.name for s in scenarios}
    assert summary.set_index(["scenario", "metric", "cls"]).loc[("syn-50", "f1", "macro"), "baseline"] == "real-50"
    finished = {p: p.stat().st_mtime_ns for p in out.glob("*/seed0/metrics.json")}
    run_experiments(data, cfg, out, synthetic)
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/seed0/metrics.json")} == finished  # resumed: nothing redone
    assert 'alt="scarcity"' in section_scenarios(out.parent)


def _fabricated(root: Path, recipes: dict[str, dict]) -> None:
    """Finished seeds (metrics.json, recipe.json) of scenarios given by their recorded recipe, then the tables."""
    for seed in range(2):
        for name, recipe in recipes.items():
            folder = root / "experiments" / name / f"seed{seed}"
            folder.mkdir(parents=True)
            f1 = 0.5 + 0.1 * seed + 0.2 * recipe.get("real_fraction", 1.0)
            (folder / "metrics.json").write_text(
                json.dumps({"macro_f1": f1, "macro_recall": f1, "accuracy": f1, "per_class": {}})
            )
            (folder / "recipe.json").write_text(json.dumps({"scenario": {"name": name, **recipe}}))
    aggregate(
        root / "experiments",
        [Scenario(name=n, **{k: v for k, v in r.items() if k != "task"}) for n, r in recipes.items()],
        [0, 1],
    )


def test_report_figure_only_with_scarcity_scenarios_and_lines_across_versions(tmp_path, monkeypatch):
    """An f = 1 fit kept from before these settings (its recipe.json lacks them) joins the line of its fractions."""
    from retinaug.report import figures

    _fabricated(tmp_path / "full", {"real": {}, "syn": {"synthetic": 1.0}})
    assert "scarcity" not in section_scenarios(tmp_path / "full")
    _fabricated(
        tmp_path / "scarce",
        {
            "real": {},
            "real-10pct": {"real_fraction": 0.1, "allocation": "proportional"},
            "syn": {"synthetic": 1.0},
            "syn-10pct": {"synthetic": 1.0, "real_fraction": 0.1, "baseline": "real-10pct"},
        },
    )
    captured = {}
    drawn = figures.ci_lines
    monkeypatch.setattr(figures, "ci_lines", lambda lines, *a: captured.update(lines) or drawn(lines, *a))
    assert 'alt="scarcity"' in section_scenarios(tmp_path / "scarce")
    assert {k: v["fraction"].tolist() for k, v in captured.items()} == {"real": [0.1, 1.0], "syn": [0.1, 1.0]}
    assert captured["syn"]["mean"].tolist() == pytest.approx([0.57, 0.75])
