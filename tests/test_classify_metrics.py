"""Metric values against hand-computed cases, and the patient-level bootstrap."""

from __future__ import annotations

import numpy as np
import pytest

from retinaug.classify.evaluate import patient_bootstrap
from retinaug.classify.metrics import PER_CLASS, SCALARS, compute_metrics, replicate_metrics

CLASSES = ("G", "C", "A")


def onehot_probs(pred: list[int], k: int = 3, p: float = 0.8) -> np.ndarray:
    probs = np.full((len(pred), k), (1 - p) / (k - 1))
    probs[np.arange(len(pred)), pred] = p
    return probs


def test_hand_computed_precision_recall_f1_kappa():
    y = [0, 0, 0, 1, 1, 2]
    pred = [0, 0, 1, 1, 2, 2]
    m = compute_metrics(y, onehot_probs(pred), CLASSES)
    # confusion: G 2 right 1 ->C ; C 1 right 1 ->A ; A 1 right
    assert m["confusion"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert m["accuracy"] == pytest.approx(4 / 6)
    pc = m["per_class"]
    assert pc["G"]["precision"] == pytest.approx(1.0) and pc["G"]["recall"] == pytest.approx(2 / 3)
    assert pc["C"]["precision"] == pytest.approx(0.5) and pc["C"]["recall"] == pytest.approx(0.5)
    assert pc["A"]["precision"] == pytest.approx(0.5) and pc["A"]["recall"] == pytest.approx(1.0)
    f1 = [0.8, 0.5, 2 / 3]
    assert m["macro_f1"] == pytest.approx(np.mean(f1))
    assert m["weighted_f1"] == pytest.approx((3 * 0.8 + 2 * 0.5 + 1 * 2 / 3) / 6)
    assert m["macro_precision"] == pytest.approx((1 + 0.5 + 0.5) / 3)
    # kappa: po = 4/6, pe = (3*2 + 2*2 + 1*2)/36 = 1/3 -> (2/3 - 1/3) / (2/3) = 0.5
    assert m["kappa"] == pytest.approx(0.5)
    assert m["confusion_normalized"][0] == pytest.approx([2 / 3, 1 / 3, 0])
    assert pc["G"]["support"] == 3 and pc["C"]["predicted"] == 2


def test_auc_per_class_hand_computed():
    y = np.array([0, 0, 1, 1])
    probs = np.array([[0.9, 0.1, 0.0], [0.4, 0.6, 0.0], [0.7, 0.3, 0.0], [0.2, 0.8, 0.0]])
    m = compute_metrics(y, probs, CLASSES)
    # class G: positives scored 0.9, 0.4; negatives 0.7, 0.2 -> 3 of 4 pairs ordered -> 0.75
    assert m["per_class"]["G"]["auc"] == pytest.approx(0.75)
    assert m["per_class"]["C"]["auc"] == pytest.approx(0.75)
    # A is absent from y_true: AUC, recall and F1 undefined -> None, excluded from the macro averages
    assert m["per_class"]["A"]["auc"] is None and m["per_class"]["A"]["recall"] is None
    assert m["macro_auc"] == pytest.approx(0.75)
    assert m["macro_recall"] == pytest.approx(0.5)  # G 1/2, C 1/2


def test_odir_score_perfect_and_flattened():
    y = np.array([0, 1, 2, 2])
    perfect = np.eye(3)[y]
    m = compute_metrics(y, perfect, CLASSES)
    assert (
        m["odir_kappa"] == pytest.approx(1) and m["odir_f1"] == pytest.approx(1) and m["odir_auc"] == pytest.approx(1)
    )
    assert m["odir_score"] == pytest.approx(1)
    # all probabilities below 0.5: no positive cell -> binary kappa 0, flattened F1 (micro) = share of negatives = 2/3
    m = compute_metrics(y, np.full((4, 3), 1 / 3), CLASSES)
    assert m["odir_kappa"] == pytest.approx(0) and m["odir_f1"] == pytest.approx(2 / 3)
    assert m["odir_auc"] == pytest.approx(0.5)


def test_patient_bootstrap_groups_images_of_a_patient():
    """10 patients x 10 identical-outcome images vs 100 independent patients: same accuracy (0.6),
    but the clustered data carries only 10 independent outcomes, so its CI must be much wider."""
    y = np.zeros(100, dtype=int)
    correct = np.repeat([1, 1, 1, 1, 1, 1, 0, 0, 0, 0], 10).astype(bool)
    probs = np.where(correct[:, None], onehot_probs([0] * 100), onehot_probs([1] * 100))
    clustered = np.repeat(np.arange(10), 10)
    independent = np.arange(100)
    ci_c = patient_bootstrap(y, probs, clustered, CLASSES, n_boot=150, seed=1)["ci"]["accuracy"]
    ci_i = patient_bootstrap(y, probs, independent, CLASSES, n_boot=150, seed=1)["ci"]["accuracy"]
    assert ci_c[0] <= 0.6 <= ci_c[1] and ci_i[0] <= 0.6 <= ci_i[1]
    assert (ci_c[1] - ci_c[0]) > 2 * (ci_i[1] - ci_i[0])


@pytest.mark.parametrize("case", ["random", "tied scores", "one class only", "class absent"])
def test_replicate_metrics_equal_sklearn_on_the_repeated_rows(case):
    """Each weighting row gives what compute_metrics (sklearn) gives on the images repeated that many times,
    None where sklearn's is undefined (NaN here): the bootstrap's fast path must not change one interval."""
    rng = np.random.default_rng(5)
    n, k = 40, 4
    y = rng.integers(0, k, n)
    probs = rng.dirichlet(np.ones(k), n)
    if case == "tied scores":
        probs = np.round(probs, 1)
    if case == "one class only":
        y[:] = 2
    if case == "class absent":
        y[y == 1] = 0
    weights = rng.integers(0, 3, (12, n))
    weights[0] = 0
    weights[0, :3] = 1  # three images only: most classes absent, several AUCs undefined
    scalars, per_class = replicate_metrics(y, probs, weights)
    classes = tuple("GCAH")
    undefined = 0
    for b, row in enumerate(weights):
        idx = np.repeat(np.arange(n), row)
        ref = compute_metrics(y[idx], probs[idx], classes)
        for name in SCALARS:
            assert (ref[name] is None) == bool(np.isnan(scalars[name][b])), (b, name)
            if ref[name] is not None:
                assert scalars[name][b] == pytest.approx(ref[name], abs=1e-12), (b, name)
        for i, c in enumerate(classes):
            for name in PER_CLASS:
                expected = ref["per_class"][c][name]
                undefined += expected is None
                assert (expected is None) == bool(np.isnan(per_class[name][b, i])), (b, c, name)
                if expected is not None:
                    assert per_class[name][b, i] == pytest.approx(expected, abs=1e-12), (b, c, name)
    assert undefined > 0  # every case reaches the None paths (the three-image row at least)


def test_patient_bootstrap_is_seeded_and_blocks_do_not_matter(monkeypatch):
    """Same seed, same intervals, whatever the block size the replicates are scored in."""
    import importlib

    evaluate = importlib.import_module("retinaug.classify.evaluate")  # the package exports a function of that name
    rng = np.random.default_rng(2)
    y = rng.integers(0, 3, 60)
    probs = rng.dirichlet(np.ones(3), 60)
    patients = np.repeat(np.arange(30), 2)
    a = patient_bootstrap(y, probs, patients, CLASSES, n_boot=250, seed=4)
    monkeypatch.setattr(evaluate, "BOOT_BLOCK", 7)
    b = patient_bootstrap(y, probs, patients, CLASSES, n_boot=250, seed=4)
    assert a == b
    c = patient_bootstrap(y, probs, patients, CLASSES, n_boot=250, seed=5)
    assert c["ci"]["macro_f1"] != a["ci"]["macro_f1"]
