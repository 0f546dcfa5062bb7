"""How synthetic rows train (issue 28): pretrain then fine-tune, DA-Fusion replacement, per-row loss weights and soft
labels; their scenario fields, hashing and resume. Real tiny fits (16 px, resnet10t, 1-2 epochs) on a tiny on-disk
dataset with img2img-like synthetic children of its real train images."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import make_dataset
from PIL import Image
from safetensors.torch import load_file

from retinaug.classify import LabelConfig, RowUse, TrainConfig, fit, label
from retinaug.classify.data import Replacement
from retinaug.classify.label import soft_targets
from retinaug.classify.models import create_model
from retinaug.errors import RetinaugError
from retinaug.experiments import SCENARIO_SETS, ExperimentConfig, Scenario, accepted_synthetic, baseline_of, compose
from retinaug.experiments.runner import plan_fits, run_experiments
from retinaug.experiments.scenarios import schedule_control, traditional_reference
from retinaug.io import sha256_text
from retinaug.manifest import new_manifest, prob_column
from retinaug.stages import config_hash, result_settings

train_module = importlib.import_module(
    "retinaug.classify.train"
)  # the module (the package exports its `train` function)
TASK = ("G", "C", "A")
TINY = dict(backbone="resnet10t", size=16, epochs=2, batch_size=8, task="G,C,A", patience=5, augment=False)
NEW_FIELDS = (
    "synthetic_use",
    "pretrain_with_real",
    "finetune_epochs",
    "finetune_lr",
    "replace_probability",
    "synthetic_weight",
    "traditional_weight",
    "soft_labels",
)


@pytest.fixture(scope="module")
def pool(tmp_path_factory) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(data, labelled synthetic): 3 classes x 6 real train images; 2 synthetic children per real train image (their
    `parent`), accepted, with a 4-class labeler's probabilities (G, C, A and N, which no task here has)."""
    root = tmp_path_factory.mktemp("use")
    data = make_dataset(root / "data", classes=TASK, patients_per_class=6, size=16)
    rng = np.random.default_rng(0)
    rows = []
    for parent in data[data["split"] == "train"].itertuples():
        for k in range(2):
            pixels = np.clip(np.asarray(Image.open(parent.path), dtype=float) + rng.normal(0, 10, (16, 16, 3)), 0, 255)
            path = root / "syn" / parent.label / f"{Path(parent.path).stem}_{k}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels.astype(np.uint8)).save(path)
            probs = rng.dirichlet(np.ones(4))
            rows.append(
                dict(
                    path=str(path),
                    label=parent.label,
                    patient_id=f"syn-{path.stem}",
                    eye="unknown",
                    split="train",
                    origin="synthetic",
                    source="t",
                    parent=parent.path,
                    accepted=True,
                    **{prob_column(c): p for c, p in zip("GCAN", probs)},
                )
            )
    return data, new_manifest(rows)


def _train_val(
    data: pd.DataFrame, synthetic: pd.DataFrame, sc: Scenario, seed: int = 0
) -> tuple[pd.DataFrame, pd.DataFrame]:
    train, val, _, _ = compose(sc, seed, data, accepted_synthetic(synthetic))
    return train, val


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def _same_weights(a: Path, b: Path) -> bool:
    wa, wb = _weights(a), _weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def _history(folder: Path, drop: tuple[str, ...] = ("seconds",)) -> list[dict]:
    rows = json.loads((folder / "model.json").read_text())["history"]
    return [{k: v for k, v in r.items() if k not in drop} for r in rows]


# ---------------------------------------------------------------- scenario fields, validation, hashing


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"synthetic_use": "pretrain"}, "synthetic_use: pretrain needs synthetic rows"),
        ({"soft_labels": True}, "soft_labels: True needs synthetic rows"),
        ({"synthetic": 1, "traditional_weight": 0.5}, "traditional_weight: 0.5 needs traditional rows"),
        ({"synthetic": 1, "replace_probability": 0.2}, "replace_probability is read only with synthetic_use: replace"),
        (
            {"synthetic": 1, "synthetic_use": "replace", "finetune_lr": 1e-3},
            "finetune_lr is read only with synthetic_use: pretrain",
        ),
        ({"synthetic": 1, "traditional": 1, "synthetic_use": "pretrain"}, "traditional rows would go unused"),
        (
            {"synthetic": 1, "synthetic_use": "pretrain", "synthetic_classes": ["G"], "task": "G,C,A"},
            r"classes \['C', 'A'\] get none",
        ),
        (
            {"synthetic": 1, "synthetic_use": "pretrain", "synthetic_weight": 0.5},
            "a pretrain phase on synthetic rows alone",
        ),
        ({"synthetic": 1, "synthetic_weight": -1}, "greater than or equal to 0"),
        ({"synthetic": 1, "synthetic_use": "replace", "replace_probability": 1.5}, "less than or equal to 1"),
        ({"synthetic": 1, "synthetic_use": "sometimes"}, "'mix', 'pretrain' or 'replace'"),
    ],
)
def test_scenario_use_fields_are_validated(fields, message):
    with pytest.raises(ValueError, match=message):
        Scenario(name="s", **fields)


def test_pretrain_on_real_rows_alone_is_the_schedule_control_not_a_baseline():
    """synthetic 0 with pretrain_with_real: both phases on the real rows (what pretrain owes to training twice); it is
    paired against real-only like the synthetic scenarios, never taken for the real-only baseline itself."""
    control = Scenario(name="twice", synthetic_use="pretrain", pretrain_with_real=True)
    real, syn = Scenario(name="real"), Scenario(name="syn", synthetic=1, synthetic_use="pretrain")
    assert not control.real_only and real.real_only
    assert baseline_of(control, [control, real, syn]) == "real" and baseline_of(syn, [control, real, syn]) == "real"
    assert traditional_reference(control, [control, real, Scenario(name="trad", traditional=1)]) is None


def test_weights_and_soft_labels_refuse_mixup():
    for use in ({"synthetic_weight": 0.5}, {"soft_labels": True}):
        with pytest.raises(ValueError, match="scenario s: .* need mixup and cutmix off"):
            ExperimentConfig(sets=[], scenarios=[Scenario(name="s", synthetic=1, **use)], train=TrainConfig(mixup=0.2))
        with pytest.raises(RetinaugError, match="need mixup and cutmix off"):
            fit(pd.DataFrame(), pd.DataFrame(), TrainConfig(**TINY, cutmix=1.0), Path("unused"), use=RowUse(**use))
    ExperimentConfig(
        sets=[], scenarios=[Scenario(name="s", synthetic=1, synthetic_use="replace")], train=TrainConfig(mixup=0.2)
    )


def test_synthetic_use_set_resolves_and_pairs_against_real():
    cfg = ExperimentConfig(sets=["synthetic-use", "paper-5class-vs-traditional"])  # shared names: identical recipes
    resolved = cfg.resolve()
    names = [s.name for s in SCENARIO_SETS["synthetic-use"]]
    assert names == [
        "5class-real",
        "5class-syn-x1",
        "5class-syn-x1-pretrain",
        "5class-real-pretrain",
        "5class-syn-x1-replace0.5",
        "5class-syn-x1-weight0.5",
        "5class-syn-x1-soft",
        "5class-syn-x1-need",
        "5class-trad-x1",
    ]
    assert set(names) <= {s.name for s in resolved}
    by_name = {s.name: s for s in resolved}
    assert [by_name[n].synthetic_use for n in names[2:5]] == ["pretrain", "pretrain", "replace"]
    assert by_name["5class-real-pretrain"].synthetic == 0 and by_name["5class-real-pretrain"].pretrain_with_real
    assert by_name["5class-syn-x1-replace0.5"].row_use().replace_probability == 0.5
    assert by_name["5class-syn-x1-weight0.5"].synthetic_weight == 0.5 and by_name["5class-syn-x1-soft"].soft_labels
    assert by_name["5class-syn-x1-need"].allocation == "need"
    synthetic = [n for n in names[1:8] if n != "5class-real-pretrain"]
    assert all(by_name[n].synthetic == 1 and by_name[n].task == "5-class" for n in synthetic)
    assert all(baseline_of(by_name[n], resolved) == "5class-real" for n in names[1:])
    # pretrain is also paired against "real, twice", the only scenario with a schedule control
    assert {n: schedule_control(by_name[n], resolved) for n in names if schedule_control(by_name[n], resolved)} == {
        "5class-syn-x1-pretrain": "5class-real-pretrain"
    }


@pytest.mark.parametrize(
    "base, field, value",
    [
        ({"synthetic": 1}, "synthetic_use", "replace"),
        ({"synthetic": 1}, "synthetic_use", "pretrain"),
        ({"synthetic": 1, "synthetic_use": "pretrain"}, "pretrain_with_real", True),
        ({"synthetic": 1, "synthetic_use": "pretrain"}, "finetune_epochs", 3),
        ({"synthetic": 1, "synthetic_use": "pretrain"}, "finetune_lr", 1e-3),
        ({"synthetic": 1, "synthetic_use": "replace"}, "replace_probability", 0.3),
        ({"synthetic": 1}, "synthetic_weight", 0.5),
        ({"synthetic": 1}, "synthetic_weight", 0),
        ({"traditional": 1}, "traditional_weight", 2),
        ({"synthetic": 1}, "soft_labels", True),
    ],
)
def test_every_new_field_changes_the_scenario_hash(base, field, value):
    assert config_hash(Scenario(name="s", **base, **{field: value}).recipe()) != config_hash(
        Scenario(name="s", **base).recipe()
    )


def test_defaults_keep_the_hash_of_earlier_versions(pool, tmp_path):
    """A recipe of before issue 28 had none of the new keys: at their defaults they hash the same, so finished fits of
    earlier versions are kept (the fit key hashes the recipe through result_settings, as config_hash does)."""
    for sc in (Scenario(name="s", synthetic=1), Scenario(name="t", traditional=2, task="G,C,A"), Scenario(name="r")):
        old = {k: v for k, v in sc.recipe().items() if k not in NEW_FIELDS}
        assert config_hash(sc.recipe()) == config_hash(old)
    data, synthetic = pool
    cfg = ExperimentConfig(
        sets=[], seeds=[0], scenarios=[Scenario(name="mix", task="G,C,A", synthetic=1)], train=TrainConfig(**TINY)
    )
    (planned,), _ = plan_fits(cfg, data, tmp_path, synthetic)
    recipe = {k: v for k, v in planned.recipe.items() if k not in ("key", "counts")}
    earlier = {**recipe, "scenario": {k: v for k, v in recipe["scenario"].items() if k not in NEW_FIELDS}}
    assert planned.recipe["key"] == sha256_text(json.dumps(result_settings(earlier), sort_keys=True))


def test_fit_carries_the_scenario_to_ray_workers(pool, tmp_path):
    """Ray ships each Fit to its worker with cloudpickle: the scenario (synthetic_use and the rest) arrives whole."""
    cloudpickle = pytest.importorskip("ray.cloudpickle")
    data, synthetic = pool
    sc = Scenario(
        name="pre",
        task="G,C,A",
        synthetic=1,
        synthetic_use="pretrain",
        pretrain_with_real=True,
        finetune_epochs=2,
        finetune_lr=1e-3,
        soft_labels=True,
    )
    (planned,), _ = plan_fits(
        ExperimentConfig(sets=[], seeds=[0], scenarios=[sc], train=TrainConfig(**TINY)), data, tmp_path, synthetic
    )
    shipped = cloudpickle.loads(cloudpickle.dumps(planned))
    assert shipped.scenario == sc and shipped.scenario.row_use() == sc.row_use() and shipped.recipe == planned.recipe
    assert shipped.config == planned.config
    pd.testing.assert_frame_equal(shipped.train, planned.train)


# ---------------------------------------------------------------- replace (DA-Fusion)


def _family(n_real: int, children: list[int], origin: str = "real") -> pd.DataFrame:
    """`n_real` rows of classes G/C in turn, row i with children[i % len(children)] synthetic children."""
    rows = []
    for i in range(n_real):
        parent = f"/r/{i}.png"
        rows.append(dict(path=parent, label="GC"[i % 2], origin=origin))
        rows += [
            dict(path=f"/s/{i}_{k}.png", label="GC"[i % 2], origin="synthetic", parent=parent)
            for k in range(children[i % len(children)])
        ]
    return pd.DataFrame(rows)


def test_replace_draws_alpha_of_the_rows_with_children_uniformly_per_seed_and_epoch():
    df = _family(200, [1, 2, 3])
    rep = Replacement(df, 0.5, seed=0)
    assert (df.loc[rep.positions, "origin"] == "real").all() and len(rep.positions) == 200  # the epoch keeps its length
    shown = rep.draw(1)
    swapped = shown != rep.positions
    assert abs(swapped.sum() - 100) < 4 * np.sqrt(200 * 0.25)  # binomial(200, 0.5), 4 sigma
    parents = df["parent"].to_numpy()
    assert all(parents[s] == df.at[p, "path"] for s, p in zip(shown[swapped], rep.positions[swapped]))  # its own child
    assert np.array_equal(Replacement(df, 0.5, seed=0).draw(1), shown)  # same seed and epoch: the same draw
    assert not np.array_equal(rep.draw(2), shown) and not np.array_equal(Replacement(df, 0.5, seed=1).draw(1), shown)
    picks = pd.Series(np.concatenate([rep.draw(e) for e in range(1, 301)]))
    third = picks[picks.isin(df.index[df["parent"] == "/r/2.png"])].value_counts(
        normalize=True
    )  # a row with 3 children
    assert len(third) == 3 and (third - 1 / 3).abs().max() < 0.1  # each drawn about as often
    assert np.array_equal(Replacement(df, 0.0, seed=0).draw(1), rep.positions)
    assert (Replacement(df, 1.0, seed=0).draw(1) != rep.positions).all()


def test_replace_txt2img_per_class_and_never_traditional_rows():
    real = pd.DataFrame([dict(path=f"/r/{i}.png", label="GC"[i % 2], origin="real") for i in range(200)])
    trad = real.assign(origin="traditional", path=real["path"] + "#hflip")
    syn = pd.DataFrame(
        [dict(path=f"/s/G{k}.png", label="G", origin="synthetic") for k in range(5)]
    )  # no parent, G only
    df = pd.concat([real, trad, syn], ignore_index=True)
    rep = Replacement(df, 0.5, seed=3)
    shown = rep.draw(1)
    own = df.loc[rep.positions]
    swapped = shown != rep.positions
    assert set(df.loc[shown[swapped], "label"]) == {"G"} and set(df.loc[shown[swapped], "origin"]) == {"synthetic"}
    assert (
        set(own.loc[rep.positions[swapped], "label"]) == {"G"}
        and (own.loc[rep.positions[swapped], "origin"] == "real").all()
    )
    assert abs(swapped.sum() - 50) < 4 * np.sqrt(100 * 0.25)  # half of the 100 real G rows


def test_replace_refuses_children_of_no_train_row():
    df = _family(4, [1]).assign(parent=lambda d: d["parent"].where(d["parent"].isna(), "/elsewhere/x.png"))
    with pytest.raises(RetinaugError, match="none of the 4 synthetic rows can stand in"):
        Replacement(df, 0.5, seed=0)


def test_replace_fit_alpha0_is_the_real_only_fit(pool, tmp_path):
    """At alpha 0 nothing is replaced: the same positions, batches and augmentation draws as the fit on the real rows
    alone, so the same weights bit for bit (the synthetic pixels are loaded but never shown)."""
    data, synthetic = pool
    train, val = _train_val(data, synthetic, Scenario(name="r", task="G,C,A", synthetic=1, synthetic_use="replace"))
    cfg = TrainConfig(**{**TINY, "augment": True, "imbalance": "oversample"})
    fit(train, val, cfg, tmp_path / "alpha0", use=RowUse(replace_probability=0.0))
    fit(train[train["origin"] == "real"], val, cfg, tmp_path / "real")
    assert _same_weights(tmp_path / "alpha0", tmp_path / "real")
    assert _history(tmp_path / "alpha0", ("seconds", "replaced")) == _history(tmp_path / "real")
    half = fit(train, val, cfg, tmp_path / "half", use=RowUse(replace_probability=0.5))
    n_real = int((train["origin"] == "real").sum())
    assert [r["replaced"] for r in _history(tmp_path / "alpha0", ())] == [0, 0]
    assert all(0 < r["replaced"] < n_real for r in half["history"])  # 18 real rows, each with a child in the x1 pool
    assert (
        half["train_origins"] == {"real": n_real, "synthetic": n_real} and half["row_use"]["replace_probability"] == 0.5
    )


# ---------------------------------------------------------------- loss weights


def test_unit_weights_are_the_unweighted_fit_and_other_weights_are_not(pool, tmp_path):
    """Rows that all weigh 1 take torch's own mean: the fit is bit for bit the one of before these settings
    (also checked by hand against the previous release's code); a weight of 0.5 changes it."""
    data, synthetic = pool
    train, val = _train_val(data, synthetic, Scenario(name="m", task="G,C,A", synthetic=1))
    cfg = TrainConfig(**{**TINY, "epochs": 1})
    fit(train, val, cfg, tmp_path / "plain")
    fit(train, val, cfg, tmp_path / "unit", use=RowUse(synthetic_weight=1.0, traditional_weight=1.0))
    fit(train, val, cfg, tmp_path / "half", use=RowUse(synthetic_weight=0.5))
    assert _same_weights(tmp_path / "plain", tmp_path / "unit")
    assert not _same_weights(tmp_path / "plain", tmp_path / "half")


@pytest.mark.parametrize("imbalance", ["none", "class-weights"])
def test_weighted_loss_normalisation_and_zero_weight_rows(imbalance):
    """The weighted mean equals torch's mean at unit weights (to float rounding), rows of weight 0 drop out of it
    exactly as if absent, and a batch of only such rows has no gradient at all: one AdamW step from a fresh optimiser
    then only decays the weights. (Their pixels still pass through batch norm in train mode, so a fit with weight-0
    rows is not the fit without them: the batches differ.)"""
    torch.manual_seed(0)
    model = create_model(TrainConfig(**TINY), 3)
    x, y = torch.randn(8, 3, 16, 16), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    class_weight = torch.tensor([0.5, 1.0, 2.0]) if imbalance == "class-weights" else None
    loss = train_module._loss
    model.eval()  # each row's logits independent of the others
    logits = model(x)
    plain = torch.nn.functional.cross_entropy(logits, y, weight=class_weight, label_smoothing=0.1)
    assert loss(logits, y, torch.ones(8), class_weight, 0.1).item() == pytest.approx(plain.item(), rel=1e-6)
    keep = torch.tensor([1, 1, 0, 1, 0, 1, 1, 0], dtype=torch.float32)
    alone = torch.nn.functional.cross_entropy(logits[keep == 1], y[keep == 1], weight=class_weight, label_smoothing=0.1)
    assert loss(logits, y, keep, class_weight, 0.1).item() == pytest.approx(alone.item(), rel=1e-6)
    model.train()
    before = {k: p.detach().clone() for k, p in model.named_parameters()}
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01, weight_decay=0.05)
    zero = loss(model(x), y, torch.zeros(8), class_weight, 0.1)
    zero.backward()
    assert zero.item() == 0 and all(p.grad is not None and not p.grad.any() for p in model.parameters())
    optimizer.step()
    assert all(torch.equal(p.detach(), before[k] * (1 - 0.01 * 0.05)) for k, p in model.named_parameters())


# ---------------------------------------------------------------- soft labels


def test_soft_targets_renormalise_the_labelers_probabilities(pool):
    _, synthetic = pool
    rows = synthetic.head(4)
    stored = rows[[prob_column(c) for c in TASK]].to_numpy(dtype=float)
    got = soft_targets(rows, TASK)
    assert got.dtype == np.float32 and np.allclose(got, stored / stored.sum(1, keepdims=True))  # N is not a task class
    with pytest.raises(RetinaugError, match="the labeler gave no probability of class\\(es\\) H .* 4 synthetic row"):
        soft_targets(rows, ("G", "H"))
    with pytest.raises(RetinaugError, match="re-run the label stage"):
        soft_targets(rows.drop(columns=[prob_column(c) for c in "GCAN"]), TASK)


def test_soft_label_fit_trains_on_the_stored_probabilities(pool, tmp_path, monkeypatch):
    """One batch holding every row: the targets the loss gets are the synthetic rows' stored probabilities
    (renormalised over the task) and the real rows' smoothed one-hot labels; the row weights mark the synthetic rows."""
    data, synthetic = pool
    train, val = _train_val(data, synthetic, Scenario(name="s", task="G,C,A", synthetic=1, soft_labels=True))
    seen = []
    real_loss = train_module._loss

    def spy(logits, target, row_weight, class_weight, smoothing):
        seen.append((target.detach().clone(), row_weight.clone(), smoothing))
        return real_loss(logits, target, row_weight, class_weight, smoothing)

    monkeypatch.setattr(train_module, "_loss", spy)
    cfg = TrainConfig(**{**TINY, "epochs": 1, "batch_size": 64, "label_smoothing": 0.1})
    fit(train, val, cfg, tmp_path / "soft", use=RowUse(soft_labels=True, synthetic_weight=0.5))
    ((target, row_weight, smoothing),) = seen
    syn = (train["origin"] == "synthetic").to_numpy()
    stored = train.loc[syn, [prob_column(c) for c in TASK]].to_numpy(dtype=float)
    labels = train["label"].map({c: i for i, c in enumerate(TASK)}).to_numpy()
    expected = np.full((len(train), 3), 0.1 / 3)
    expected[np.arange(len(train)), labels] += 0.9
    expected[syn] = stored / stored.sum(1, keepdims=True)
    order = lambda a: a[np.lexsort(np.round(a, 6).T)]  # noqa: E731 (the batch is shuffled)
    assert target.shape == (len(train), 3) and smoothing == 0.0  # the targets carry the smoothing
    assert np.allclose(order(target.numpy()), order(expected), atol=1e-6)
    assert sorted(row_weight.tolist()) == [0.5] * int(syn.sum()) + [1.0] * int((~syn).sum())


def test_label_stage_stores_the_class_probabilities(pool, tmp_path):
    data, synthetic = pool
    fit(
        data[data["split"] == "train"],
        data[data["split"] == "val"],
        TrainConfig(**{**TINY, "epochs": 1}),
        tmp_path / "labeler",
    )
    out = label(
        tmp_path / "labeler",
        synthetic.drop(columns=[prob_column(c) for c in "GCAN"] + ["accepted"]),
        LabelConfig(),
        tmp_path / "label",
    )
    probs = out[[prob_column(c) for c in TASK]].to_numpy(dtype=float)
    assert prob_column("N") not in out.columns  # only the labeler's classes
    assert np.allclose(probs.sum(1), 1, atol=1e-5) and np.allclose(probs.max(1), out["pred_conf"].to_numpy(dtype=float))
    assert (np.asarray(TASK)[probs.argmax(1)] == out["pred_label"].to_numpy()).all()


# ---------------------------------------------------------------- pretrain, and the runner end to end


def test_runner_pretrain_phases_and_resume(pool, tmp_path, monkeypatch):
    """pretrain: phase 1 on the synthetic rows only, phase 2 on the real rows only, starting from phase 1's saved
    weights (head included), with its own epochs and learning rate; the other uses run through the same runner, and
    a re-run keeps every finished fit."""
    data, synthetic = pool
    starts = []  # the weights each fit starts from, when its optimiser is made (after any warm start)
    real_groups = train_module.param_groups

    def spy(model, config):
        starts.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        return real_groups(model, config)

    monkeypatch.setattr(train_module, "param_groups", spy)
    scenarios = [
        Scenario(name="pre", task="G,C,A", synthetic=1, synthetic_use="pretrain", finetune_epochs=1, finetune_lr=1e-3),
        Scenario(name="rep", task="G,C,A", synthetic=1, synthetic_use="replace", replace_probability=0.3),
        Scenario(name="soft", task="G,C,A", synthetic=1, soft_labels=True, synthetic_weight=0.5),
        Scenario(name="twice", task="G,C,A", synthetic_use="pretrain", pretrain_with_real=True),
    ]  # the control
    cfg = ExperimentConfig(sets=[], seeds=[0], n_boot=10, scenarios=scenarios, train=TrainConfig(**TINY))
    out = tmp_path / "experiments"
    run_experiments(data, cfg, out, synthetic)
    fit_dir = out / "pre" / "seed0"
    first, second = (json.loads((d / "model.json").read_text()) for d in (fit_dir / "pretrain", fit_dir))
    assert first["train_origins"] == {"synthetic": 18} and second["train_origins"] == {"real": 18}
    assert (first["config"]["epochs"], len(first["history"])) == (2, 2)
    assert (second["config"]["epochs"], second["config"]["lr"], len(second["history"])) == (1, 1e-3, 1)
    assert second["start"] == str(fit_dir / "pretrain" / "model.safetensors")
    pretrained = _weights(fit_dir / "pretrain")
    assert starts[1].keys() == pretrained.keys() and all(torch.equal(starts[1][k], pretrained[k]) for k in pretrained)
    assert not all(torch.equal(starts[0][k], pretrained[k]) for k in pretrained)  # phase 1 started elsewhere
    rep = json.loads((out / "rep" / "seed0" / "model.json").read_text())
    assert rep["row_use"]["replace_probability"] == 0.3 and all("replaced" in r for r in rep["history"])
    soft = json.loads((out / "soft" / "seed0" / "recipe.json").read_text())
    assert "soft_targets" in soft and soft["scenario"]["soft_labels"] is True
    twice = [json.loads((out / "twice" / "seed0" / d / "model.json").read_text()) for d in ("pretrain", ".")]
    assert [m["train_origins"] for m in twice] == [{"real": 18}, {"real": 18}]  # pretrain's schedule, real rows only
    assert twice[1]["start"] == str(out / "twice" / "seed0" / "pretrain" / "model.safetensors")
    metrics = {p: p.stat().st_mtime_ns for p in out.glob("*/seed0/metrics.json")}
    assert len(metrics) == 4
    run_experiments(data, cfg, out, synthetic)
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/seed0/metrics.json")} == metrics  # kept, not redone
    relabelled = synthetic.assign(
        **{prob_column("G"): synthetic[prob_column("C")], prob_column("C"): synthetic[prob_column("G")]}
    )
    keys = {f.name: f.recipe["key"] for f in plan_fits(cfg, data, out, relabelled)[0]}
    assert keys["soft/seed0"] != soft["key"]  # other soft targets, same images and labels: redone
    assert keys["rep/seed0"] == json.loads((out / "rep" / "seed0" / "recipe.json").read_text())["key"]
