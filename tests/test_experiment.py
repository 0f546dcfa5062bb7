"""Scenario composition (counts per class, exactly), val/test purity, aggregation, and kill -9 resume."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from pipeline_helpers import cli, cli_env
from scipy import stats

from retinaug.errors import LeakageError, RetinaugError
from retinaug.experiments import (
    SCENARIO_SETS,
    ExperimentConfig,
    Scenario,
    accepted_synthetic,
    aggregate,
    asked_vs_labelled,
    baseline_of,
    check_sets,
    compose,
)
from retinaug.manifest import new_manifest

REAL_TRAIN = {"G": 10, "C": 7, "A": 5, "H": 3, "M": 4, "D": 20, "N": 30}


def _rows(code: str, n: int, split: str, origin: str = "real", start: int = 0, **extra) -> list[dict]:
    pid = (lambda i: f"syn-{code}-{i}") if origin == "synthetic" else (lambda i: f"{split}-{code}{i}")
    return [
        dict(
            path=f"/d/{origin}/{split}/{code}_{i}.png",
            label=code,
            patient_id=pid(i),
            eye="unknown",
            split=split,
            origin=origin,
            source="t",
            **extra,
        )
        for i in range(start, start + n)
    ]


@pytest.fixture
def data() -> pd.DataFrame:
    rows = []
    for code, n in REAL_TRAIN.items():
        rows += _rows(code, n, "train") + _rows(code, 2, "val") + _rows(code, 3, "test")
    return new_manifest(rows)


@pytest.fixture
def synthetic() -> pd.DataFrame:
    """40 accepted + 5 rejected synthetic images per 5-class class, except only 6 accepted for H."""
    rows = []
    for code in "GCAHM":
        n_ok = 6 if code == "H" else 40
        rows += _rows(code, n_ok, "train", "synthetic", accepted=True) + _rows(
            code, 5, "train", "synthetic", start=100, accepted=False
        )
    return new_manifest(rows)


@pytest.fixture
def traditional(data) -> pd.DataFrame:
    train = data[(data["split"] == "train")]
    rows = []
    for t in ("hflip", "vflip", "rot90"):
        part = train.copy()
        part["origin"], part["transform"], part["parent"] = "traditional", t, part["path"]
        rows.append(part)
    return new_manifest(pd.concat(rows).to_dict("records"))


def _counts(counts: pd.DataFrame, col: str) -> dict[str, int]:
    return dict(zip(counts["class"], counts[col]))


@pytest.mark.parametrize("mult", [0.5, 1, 1.5, 2, 4])
def test_synthetic_multipliers_exact_counts(data, synthetic, mult):
    sc = Scenario(name="s", synthetic=mult)
    syn = accepted_synthetic(synthetic)
    train, val, test, counts = compose(sc, 0, data, syn)
    for code in "GCAHM":
        want = int(np.floor(mult * REAL_TRAIN[code] + 0.5))
        got = min(want, 6) if code == "H" else want  # H has only 6 accepted images
        row = counts.set_index("class").loc[code]
        assert (row["real"], row["synthetic_requested"], row["synthetic"]) == (REAL_TRAIN[code], want, got)
        assert row["synthetic_shortfall"] == want - got
        assert ((train["label"] == code) & (train["origin"] == "synthetic")).sum() == got
        assert ((train["label"] == code) & (train["origin"] == "real")).sum() == REAL_TRAIN[code]
    assert set(train["label"]) == set("GCAHM")
    assert not train.loc[train["origin"] == "synthetic", "path"].str.contains("_1[0-9][0-9].png").any(), (
        "rejected rows used"
    )
    assert len(val) == 5 * 2 and len(test) == 5 * 3
    assert (val["origin"] == "real").all() and (test["origin"] == "real").all()


def test_paper_sets_shapes():
    names = lambda s: [sc.name for sc in SCENARIO_SETS[s]]  # noqa: E731
    assert [sc.synthetic for sc in SCENARIO_SETS["paper-5class-synthetic"]] == [0, 0.5, 1, 1.5, 2, 4]
    assert [(sc.synthetic, sc.traditional) for sc in SCENARIO_SETS["paper-5class-vs-traditional"]] == [
        (0, 0),
        (1, 0),
        (0, 1),
        (2, 0),
        (0, 2),
    ]
    assert names("paper-7class") == ["7class-real", "7class-syn-x1-tsne"]
    assert [sc.imbalance for sc in SCENARIO_SETS["controls"]] == [None, "oversample", "class-weights"]
    cfg = ExperimentConfig(sets=["paper-5class-synthetic", "paper-5class-vs-traditional", "controls"])
    resolved = [s.name for s in cfg.resolve()]
    assert len(resolved) == len(set(resolved)) == 6 + 2 + 2  # shared 5class-real / syn-x1 / syn-x2 trained once
    assert all(baseline_of(s, cfg.resolve()) == "5class-real" for s in cfg.resolve() if s.name != "5class-real")


def test_synthetic_on_traditional_is_paired_against_traditional(data, synthetic, traditional):
    """syn + trad adds both kinds at x1 and is paired against trad alone; `only` keeps the chain of baselines."""
    cfg = ExperimentConfig(sets=["synthetic-on-traditional"], only=["5class-syn-x1-trad-x1"])
    resolved = cfg.resolve()
    assert [s.name for s in resolved] == ["5class-real", "5class-trad-x1", "5class-syn-x1-trad-x1"]
    assert [baseline_of(s, resolved) for s in resolved] == [None, "5class-real", "5class-trad-x1"]
    with pytest.raises(ValueError, match=r"\{'odd': 'trad-typo'\} .* name no scenario of this run"):
        ExperimentConfig(
            sets=["synthetic-on-traditional"],
            only=["odd"],
            scenarios=[Scenario(name="odd", traditional=1, baseline="trad-typo")],
        )
    train, *_, counts = compose(resolved[2], 0, data, accepted_synthetic(synthetic), traditional)
    assert _counts(counts, "traditional") == {c: REAL_TRAIN[c] for c in "GCAHM"}
    assert _counts(counts, "synthetic") == {c: REAL_TRAIN[c] for c in "GCAHM"}  # the fixture has enough of each
    n_real = sum(REAL_TRAIN[c] for c in "GCAHM")
    assert train["origin"].value_counts().to_dict() == {"real": n_real, "traditional": n_real, "synthetic": n_real}


def test_traditional_and_seeded_sampling(data, synthetic, traditional):
    syn = accepted_synthetic(synthetic)
    sc1 = Scenario(name="t1", traditional=1)
    train, *_, counts = compose(sc1, 0, data, syn, traditional)
    assert _counts(counts, "traditional") == {c: REAL_TRAIN[c] for c in "GCAHM"}
    assert (train.loc[train["origin"] == "traditional", "split"] == "train").all()
    # deterministic per seed, different across seeds, nested across multipliers
    a = compose(Scenario(name="a", synthetic=1), 1, data, syn)[0]
    b = compose(Scenario(name="b", synthetic=1), 1, data, syn)[0]
    c = compose(Scenario(name="c", synthetic=1), 2, data, syn)[0]
    d = compose(Scenario(name="d", synthetic=2), 1, data, syn)[0]
    assert a["path"].tolist() == b["path"].tolist()
    assert set(a["path"]) != set(c["path"])
    assert set(a["path"]) <= set(d["path"])
    # traditional shortfall: x4 asks for 4 per real image, the pool has 3 transforms per image
    counts4 = compose(Scenario(name="t4", traditional=4, traditional_classes=["G"]), 0, data, syn, traditional)[
        3
    ].set_index("class")
    assert counts4.loc["G", ["traditional_requested", "traditional", "traditional_shortfall"]].tolist() == [40, 30, 10]
    assert counts4.loc["C", "traditional"] == 0


def test_seven_class_selection_replaces_dominant(data, synthetic):
    sel = data[(data["split"] == "train") & data["label"].isin(["D", "N"])].groupby("label").head(4)
    sc = SCENARIO_SETS["paper-7class"][1]
    train, val, test, counts = compose(sc, 0, data, accepted_synthetic(synthetic), selection=sel)
    c = counts.set_index("class")
    assert c.loc["D", ["real", "selected", "synthetic"]].tolist() == [20, 4, 0]
    assert c.loc["N", ["real", "selected", "synthetic"]].tolist() == [30, 4, 0]
    for code in "GCAM":
        assert c.loc[code, ["selected", "synthetic", "train_total"]].tolist() == [REAL_TRAIN[code]] * 2 + [
            2 * REAL_TRAIN[code]
        ]
    assert set(train.loc[train["label"].isin(["D", "N"]), "path"]) == set(sel["path"])
    assert len(test) == 7 * 3 and (test["origin"] == "real").all()


def test_no_synthetic_or_augmented_rows_in_val_test(data, synthetic):
    train, val, test, _ = compose(Scenario(name="s", synthetic=1), 0, data, accepted_synthetic(synthetic))
    bad_val = pd.concat([val, synthetic.head(1).assign(split="val")], ignore_index=True)
    with pytest.raises(LeakageError, match="non-real"):  # an error, not an assert: python -O keeps the guard
        check_sets(train, bad_val, test)
    with pytest.raises(LeakageError, match="patients in both"):
        check_sets(pd.concat([train, test.head(1).assign(split="train")]), val, test)


def test_accepted_column_required(synthetic):
    with pytest.raises(RetinaugError, match="give the label stage.s output"):
        accepted_synthetic(synthetic.drop(columns=["accepted"]))


def test_aggregate_mean_ci_and_paired_test(tmp_path):
    scs = [Scenario(name="real", task="G,C"), Scenario(name="syn", task="G,C", synthetic=1)]
    f1 = {"real": [0.50, 0.55, 0.60], "syn": [0.58, 0.60, 0.70]}
    for name, values in f1.items():
        for seed, v in enumerate(values):
            m = {
                "accuracy": v + 0.1,
                "macro_f1": v,
                "macro_precision": v,
                "macro_recall": v,
                "per_class": {"G": {"recall": v, "f1": v}, "C": {"recall": 1 - v, "f1": v}},
                "confusion": [[1, 0], [0, 1]],
            }
            p = tmp_path / name / f"seed{seed}" / "metrics.json"
            p.parent.mkdir(parents=True)
            p.write_text(json.dumps(m))
    summary = aggregate(tmp_path, scs, [0, 1, 2])
    row = summary[(summary.scenario == "syn") & (summary.metric == "f1") & (summary.cls == "macro")].iloc[0]
    lo, hi = stats.t.interval(0.95, 2, loc=np.mean(f1["syn"]), scale=stats.sem(f1["syn"]))
    assert row["mean"] == pytest.approx(np.mean(f1["syn"])) and (row.ci_low, row.ci_high) == pytest.approx((lo, hi))
    assert row.diff_mean == pytest.approx(np.mean(np.subtract(f1["syn"], f1["real"])))
    assert row.p_value == pytest.approx(stats.ttest_rel(f1["syn"], f1["real"]).pvalue)
    c_recall = summary[(summary.scenario == "real") & (summary.metric == "recall") & (summary.cls == "C")].iloc[0]
    assert c_recall["mean"] == pytest.approx(0.45)
    assert row.q_value == pytest.approx(row.p_value)  # the only comparison of its family: q = p
    table = (tmp_path / "table.md").read_text()
    assert "| syn |" in table and "ΔF1 vs baseline" in table and "0.627" in table and f"q={row.q_value:.2g}" in table
    assert f"{row.diff_mean:+.3f} vs real (p=" in table


def test_pooled_folds_use_the_corrected_resampled_t_test():
    """With overlap (test/train of a fold) the variance of the mean is (1/J + overlap) x var (Nadeau & Bengio):
    wider intervals and larger p than the plain paired t-test on the same (fold, seed) runs."""
    from retinaug.experiments.results import summarize_runs

    scs = [Scenario(name="real", task="G,C"), Scenario(name="syn", task="G,C", synthetic=1)]
    real = [0.50, 0.55, 0.60, 0.52, 0.58, 0.57]
    syn = [0.58, 0.60, 0.70, 0.55, 0.61, 0.66]
    runs = {
        name: {
            (fold, seed): {("f1", "macro"): v}
            for (fold, seed), v in zip([(f, s) for f in range(3) for s in range(2)], vals)
        }
        for name, vals in (("real", real), ("syn", syn))
    }
    plain = summarize_runs(runs, scs).set_index("scenario").loc["syn"]
    corrected = summarize_runs(runs, scs, overlap=0.25).set_index("scenario").loc["syn"]
    diff = np.subtract(syn, real)
    assert plain.p_value == pytest.approx(stats.ttest_rel(syn, real).pvalue)
    se = np.std(diff, ddof=1) * np.sqrt(1 / 6 + 0.25)
    assert corrected.p_value == pytest.approx(2 * stats.t.sf(diff.mean() / se, 5)) and corrected.p_value > plain.p_value
    assert (corrected.diff_ci_low, corrected.diff_ci_high) == pytest.approx(
        stats.t.interval(0.95, 5, loc=diff.mean(), scale=se)
    )
    width = lambda r, lo, hi: r[hi] - r[lo]  # noqa: E731
    ratio = np.sqrt((1 / 6 + 0.25) / (1 / 6))
    assert width(corrected, "ci_low", "ci_high") == pytest.approx(ratio * width(plain, "ci_low", "ci_high"))
    assert corrected["mean"] == plain["mean"] == pytest.approx(np.mean(syn))


def test_q_values_are_benjamini_hochberg_per_metric_and_class():
    import pandas as pd

    from retinaug.experiments.results import q_values

    summary = pd.DataFrame(
        {
            "metric": ["f1"] * 4 + ["recall"] * 2,
            "cls": ["macro"] * 6,
            "p_value": [0.01, 0.04, np.nan, 0.5, 0.02, 0.03],
            "ref_p_value": np.nan,
            "ctl_p_value": np.nan,
        }
    )
    q, ref_q, ctl_q = q_values(summary)
    assert (
        q[:4].tolist()[:2] == pytest.approx([0.03, 0.06]) and np.isnan(q[2]) and q[3] == pytest.approx(0.5)
    )  # p m / rank, monotone
    assert q[4:].tolist() == pytest.approx([0.03, 0.03])  # recall is its own family
    assert ref_q.isna().all() and ctl_q.isna().all()
    # the comparisons against a traditional reference join their (metric, class) family: 4 tests of f1 now
    summary.loc[2, "ref_p_value"] = 0.02
    q, ref_q, ctl_q = q_values(summary)
    assert q[[0, 1, 3]].tolist() == pytest.approx([0.04, 0.04 * 4 / 3, 0.5]) and ref_q[2] == pytest.approx(0.04)
    assert ref_q.drop(index=2).isna().all()
    # and so do those against a schedule control: 5 tests of f1
    summary.loc[3, "ctl_p_value"] = 0.001
    q, ref_q, ctl_q = q_values(summary)
    assert ctl_q[3] == pytest.approx(0.005) and q[[0, 1, 3]].tolist() == pytest.approx([0.025, 0.05, 0.5])
    assert ref_q[2] == pytest.approx(0.02 * 5 / 3)


def write_seed_f1(root: Path, f1: dict[str, list[float]]) -> None:
    """ROOT/<scenario>/seed<k>/metrics.json with macro F1 (and accuracy) f1[scenario][k]: finished fits to aggregate."""
    for name, values in f1.items():
        for seed, v in enumerate(values):
            p = root / name / f"seed{seed}" / "metrics.json"
            p.parent.mkdir(parents=True)
            p.write_text(json.dumps({"macro_f1": v, "accuracy": v}))


def test_pretrain_scenarios_are_also_paired_against_their_schedule_control(tmp_path):
    """Issue 28: a pretrain gain over real-only may be the second training phase's; a pretrain scenario is also paired
    against "real, twice" (the same two phases on the real rows alone) when the run has one with its fine-tune
    settings, and the headline table says by how much it beats it."""
    from retinaug.experiments.scenarios import schedule_control

    scs = [
        Scenario(name="real", task="G,C"),
        Scenario(name="syn", task="G,C", synthetic=1),
        Scenario(name="pre", task="G,C", synthetic=1, synthetic_use="pretrain"),
        Scenario(name="twice", task="G,C", synthetic_use="pretrain", pretrain_with_real=True),
        Scenario(name="pre-real", task="G,C", synthetic=1, synthetic_use="pretrain", pretrain_with_real=True),
        Scenario(name="pre-e3", task="G,C", synthetic=1, synthetic_use="pretrain", finetune_epochs=3),
        Scenario(name="pre-scarce", task="G,C", synthetic=1, synthetic_use="pretrain", real_fraction=0.5),
        Scenario(name="pre-vs-twice", task="G,C", synthetic=1, synthetic_use="pretrain", baseline="twice"),
    ]
    assert [schedule_control(sc, scs) for sc in scs] == [None, None, "twice", None, "twice", None, None, None]
    from retinaug.report.results import section_scenarios

    root = tmp_path / "experiments"
    f1 = {"real": [0.50, 0.55, 0.60], "pre": [0.62, 0.66, 0.66], "twice": [0.60, 0.61, 0.66]}
    write_seed_f1(root, f1)
    summary = aggregate(root, scs, [0, 1, 2]).set_index(["scenario", "metric"])
    pre = summary.loc[("pre", "f1")]
    assert pre.baseline == "real" and pre.control == "twice" and pre.reference == ""
    assert pre.ctl_diff_mean == pytest.approx(np.mean(np.subtract(f1["pre"], f1["twice"])))
    assert pre.ctl_p_value == pytest.approx(stats.ttest_rel(f1["pre"], f1["twice"]).pvalue)
    assert pre.diff_mean == pytest.approx(np.mean(np.subtract(f1["pre"], f1["real"])))
    # real-only vs twice, pre vs real, pre vs twice: one family of 3 tests
    family = summary.xs("f1", level="metric")
    p_values = [*family.p_value.dropna(), *family.ctl_p_value.dropna()]
    assert len(p_values) == 3 and pre.ctl_q_value == pytest.approx(stats.false_discovery_control(p_values)[-1])
    table = pd.read_csv(root / "table.csv", keep_default_na=False).set_index("scenario")
    assert table.loc["pre", "ΔF1 vs schedule control"].startswith(f"{pre.ctl_diff_mean:+.3f} vs twice (p=")
    assert table.loc["twice", "ΔF1 vs schedule control"] == "" and table.loc["twice", "ΔF1 vs baseline"].startswith("+")
    html = str(section_scenarios(tmp_path))  # the report says what the column pairs against
    assert "ΔF1 vs schedule control: a pretrain scenario against the same two training phases" in html
    assert f"{pre.ctl_diff_mean:+.3f} vs twice (p=" in html and "ΔF1 vs traditional" not in html


def test_synthetic_scenarios_are_also_paired_against_the_matching_traditional_one(tmp_path):
    """Issue 28: a synthetic scenario is compared with real-only (its baseline) and with the traditional-only scenario
    of as many rows; scenarios with traditional rows of their own, or with no matching one, get no second comparison."""
    from retinaug.experiments.scenarios import traditional_reference

    scs = [
        Scenario(name="real", task="G,C"),
        Scenario(name="syn", task="G,C", synthetic=1),
        Scenario(name="syn-w", task="G,C", synthetic=1, synthetic_weight=0.5),
        Scenario(name="trad", task="G,C", traditional=1),
        Scenario(name="syn-half", task="G,C", synthetic=0.5),
        Scenario(name="syn-trad", task="G,C", synthetic=1, traditional=1, baseline="trad"),
        Scenario(name="syn-vs-trad", task="G,C", synthetic=1, baseline="trad"),
        Scenario(name="syn-scarce", task="G,C", synthetic=1, real_fraction=0.5),
    ]
    assert [traditional_reference(sc, scs) for sc in scs] == [None, "trad", "trad", None, None, None, None, None]
    f1 = {
        "real": [0.50, 0.55, 0.60],
        "syn": [0.58, 0.60, 0.70],
        "syn-w": [0.52, 0.57, 0.61],
        "trad": [0.60, 0.66, 0.69],
    }
    write_seed_f1(tmp_path, f1)
    summary = aggregate(tmp_path, scs, [0, 1, 2]).set_index(["scenario", "metric"])
    syn = summary.loc[("syn", "f1")]
    assert syn.baseline == "real" and syn.reference == "trad"
    assert syn.ref_diff_mean == pytest.approx(np.mean(np.subtract(f1["syn"], f1["trad"])))
    assert syn.ref_p_value == pytest.approx(stats.ttest_rel(f1["syn"], f1["trad"]).pvalue)
    assert summary.loc[("trad", "f1")].reference == "" and pd.isna(summary.loc[("trad", "f1")].ref_diff_mean)
    family = summary.xs("f1", level="metric")
    p_values = [*family.p_value.dropna(), *family.ref_p_value.dropna()]
    assert len(p_values) == 5 and syn.ref_q_value == pytest.approx(
        stats.false_discovery_control(p_values)[
            len(family.p_value.dropna()) + list(family.ref_p_value.dropna().index).index("syn")
        ]
    )
    table = pd.read_csv(tmp_path / "table.csv", keep_default_na=False).set_index("scenario")
    assert table.loc["syn", "ΔF1 vs traditional"].startswith(f"{syn.ref_diff_mean:+.3f} vs trad (p=")
    assert table.loc["trad", "ΔF1 vs traditional"] == "" and table.loc["real", "ΔF1 vs baseline"] == ""


# ---------------------------------------------------------------- kill -9 resume (subprocess, real training)


def _experiment_args(cfg: Path, run: Path) -> list[str]:
    return ["experiment", "--config", str(cfg), "--run", str(run)]


def _tiny_run(root: Path) -> tuple[Path, Path]:
    from conftest import make_dataset

    from retinaug.augment import AugmentConfig, augment

    run = root / "run"
    data = make_dataset(run / "data", classes=("G", "C", "A"), patients_per_class=6, size=16)
    # the traditional pool, as the augment stage makes it
    augment(data, AugmentConfig(ratio=1, classes=("G", "C", "A")), run / "augment")
    cfg = root / "cfg.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "experiments": {
                    "sets": [],
                    "seeds": 2,
                    "n_boot": 20,
                    "scenarios": [{"name": "trad", "task": "G,C,A", "traditional": 1}],
                    "train": {"backbone": "resnet10t", "size": 16, "epochs": 2, "batch_size": 8, "augment": False},
                }
            }
        )
    )
    return cfg, run


def test_experiment_kill9_resume_same_metrics(tmp_path):
    """Uninterrupted run in-process; a second run killed with SIGKILL inside its second seed's training (right after
    that fit's first epoch: RETINAUG_FAULT=kill@epoch:3, each fit trains 2 epochs), then re-run."""
    from conftest import kill9_at

    from retinaug.config import load_config
    from retinaug.experiments import run_experiments
    from retinaug.manifest import load_manifest

    cfg_a, run_a = _tiny_run(tmp_path / "a")
    run_experiments(
        load_manifest(run_a / "data"),
        ExperimentConfig(**load_config(cfg_a).experiments.model_dump(exclude={"enabled"})),
        run_a / "experiments",
        traditional=load_manifest(run_a / "augment"),
    )
    env = cli_env()  # the in-process reference run's thread count, and this checkout's code
    cfg_b, run_b = _tiny_run(tmp_path / "b")
    kill9_at(_experiment_args(cfg_b, run_b), "kill@epoch:3", env=env)
    first, second = (run_b / "experiments" / "trad" / f"seed{k}" / "metrics.json" for k in (0, 1))
    assert first.is_file() and (second.parent / "recipe.json").is_file()  # inside seed 1: begun, not finished
    assert not second.exists() and not (run_b / "experiments" / "summary.csv").exists()
    done_before = first.stat().st_mtime_ns, json.loads(first.read_text())
    res = subprocess.run(cli(*_experiment_args(cfg_b, run_b)), env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    assert (
        first.stat().st_mtime_ns,
        json.loads(first.read_text()),
    ) == done_before  # the finished seed was skipped, not redone
    a = pd.read_csv(run_a / "experiments" / "summary.csv")
    b = pd.read_csv(run_b / "experiments" / "summary.csv")
    pd.testing.assert_frame_equal(a, b)
    assert (a["n_seeds"] == 2).all()
    comp = pd.read_csv(run_b / "experiments" / "composition.csv").set_index(["scenario", "class"])
    assert comp.loc[("trad", "G"), "traditional"] == comp.loc[("trad", "G"), "real"] == 6  # from RUN/augment
    assert "| trad |" in res.stdout


def test_asked_vs_labelled_counts_where_relabelled_images_went():
    rows = _rows("G", 3, "train", "synthetic", accepted=True) + _rows("H", 2, "train", "synthetic", accepted=True)
    rows += _rows("G", 4, "train", "synthetic", start=10, accepted=False)
    df = new_manifest(rows)
    df["intended_label"] = df["label"]
    df.loc[[1, 2, 3], "label"] = "C"  # relabel policy: two G and one H now train as C
    table = asked_vs_labelled(accepted_synthetic(df))
    assert table.index.tolist() == ["G", "H"] and table.columns.tolist() == ["G", "C", "H"]  # CLASSES order
    assert table.loc["G"].tolist() == [1, 2, 0] and table.loc["H"].tolist() == [0, 1, 1]  # rejected rows not counted


@pytest.mark.parametrize("seeds", [0, -2, [], [1, 1]])
def test_seeds_must_be_a_positive_count_or_distinct_list(seeds):
    with pytest.raises(ValueError, match="seeds: give a count >= 1 or a list of distinct seeds"):
        ExperimentConfig(seeds=seeds)


def test_seed_key_rows_follow_image_content_transform_and_label(tmp_path):
    """A seed is redone when an image it trains on is rewritten under the same name, or relabelled."""
    from retinaug.experiments.runner import rows_hash
    from retinaug.fingerprint import Digests

    image = tmp_path / "G_0.png"
    image.write_bytes(b"first")
    df = new_manifest(_rows("G", 1, "train", "synthetic")).assign(path=[str(image)])
    cache = tmp_path / "digests.json"
    digests = Digests(cache)
    before = rows_hash(df, digests)
    digests.save()
    assert rows_hash(df, Digests(cache)) == before
    image.write_bytes(b"other")  # same name, same size
    assert rows_hash(df, Digests(cache)) != before
    image.write_bytes(b"first")
    assert rows_hash(df, Digests(cache)) == before
    assert rows_hash(df.assign(label="C"), Digests(cache)) != before
    assert rows_hash(df.assign(transform="hflip"), Digests(cache)) != before
