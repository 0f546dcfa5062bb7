"""Patient-level, class-stratified train/val/test split, and the leakage audit that checks it.

Why not a plain image-level split: both eyes of a patient (and any two files with identical bytes) are
near-copies, so an image split leaks test patients into training and inflates every metric.

The unit of the split is a *group*: a patient, merged with every other patient that shares an identical
image file (same `sha256`), so exact duplicates can never straddle two splits. Each group gets one
stratification label (its rarest class, so rare classes are spread over the splits), and groups of each
class are shuffled with the seed and cut into test/val/train by the requested fractions. This is the
fraction-exact equivalent of scikit-learn's StratifiedGroupKFold (whose folds come in 1/k steps), and it
guarantees that a class with >= 2 groups reaches the test split and one with >= 3 groups reaches val.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from .errors import RetinaugError
from .manifest import half_up

SPLIT_ORDER = ("train", "val", "test")


def split_counts(n: int, val: float, test: float) -> tuple[int, int, int]:
    """How many of `n` groups of one class go to (train, val, test); train always keeps at least one."""
    n_test, n_val = half_up(n * test), half_up(n * val)
    if test > 0 and n_test == 0 and n >= 2:
        n_test = 1
    if val > 0 and n_val == 0 and n >= 3:
        n_val = 1
    while n - n_test - n_val < 1 and n_test + n_val > 0:
        if n_val >= n_test:
            n_val -= 1
        else:
            n_test -= 1
    return n - n_val - n_test, n_val, n_test


def patient_groups(df: pd.DataFrame) -> np.ndarray:
    """Group id per row: connected components of patients linked by identical image content (sha256)."""
    patients, p_idx = np.unique(df["patient_id"].astype(str).to_numpy(), return_inverse=True)
    if "sha256" not in df.columns or df["sha256"].isna().all():
        return p_idx
    has = df["sha256"].notna().to_numpy()
    hashes, h_idx = np.unique(df.loc[has, "sha256"].astype(str).to_numpy(), return_inverse=True)
    n = len(patients) + len(hashes)
    edges = coo_matrix((np.ones(has.sum()), (p_idx[has], len(patients) + h_idx)), shape=(n, n))
    _, comp = connected_components(edges, directed=False)
    return comp[p_idx]


def assign_splits(df: pd.DataFrame, val: float = 0.15, test: float = 0.15, seed: int = 0) -> pd.DataFrame:
    """Return a copy of `df` with `split` set per patient group (stratified, deterministic by `seed`).

    Messages about classes too small to reach val/test are kept in `out.attrs["split_warnings"]`."""
    if not (0 <= val < 1 and 0 <= test < 1 and val + test < 1):
        raise RetinaugError(f"split fractions val={val}, test={test} must be >= 0 and sum to less than 1")
    if df.empty:
        raise RetinaugError("cannot split an empty dataset: no image passed the checks (see rejected.csv)")
    missing = [c for c in ("label", "patient_id") if c not in df.columns]
    if missing:
        raise RetinaugError(f"cannot split: column(s) {', '.join(missing)} missing")
    if df["patient_id"].isna().any() or df["label"].isna().any():
        raise RetinaugError("cannot split: some rows have no patient_id or no label")
    out = df.copy().reset_index(drop=True)
    groups = patient_groups(out)
    n_groups = len(np.unique(groups))
    needed = 1 + (val > 0) + (test > 0)
    if n_groups < needed:
        raise RetinaugError(
            f"cannot make {needed} splits from {n_groups} patient(s); add patients or set --val 0 / --test 0"
        )
    parts: dict[str, dict[str, list]] = {}
    for code, members in strata(out, groups, seed).items():
        _, n_val, n_test = split_counts(len(members), val, test)
        parts[code] = {
            "test": members[:n_test],
            "val": members[n_test : n_test + n_val],
            "train": members[n_test + n_val :],
        }
    for name, fraction in (("test", test), ("val", val)):
        if fraction > 0 and not any(p[name] for p in parts.values()):
            # Tiny data: no class was big enough on its own; lend one group of the biggest class.
            donor = max(parts, key=lambda c: len(parts[c]["train"]))
            if len(parts[donor]["train"]) < 2:
                raise RetinaugError(
                    f"split {name} came out empty: every class has too few patients ({n_groups} in all); "
                    "add data or set the fraction to 0"
                )
            parts[donor][name].append(parts[donor]["train"].pop())
    assignment = {g: name for p in parts.values() for name, members in p.items() for g in members}
    warnings = [
        f"class {code} has only {sum(map(len, p.values()))} patient(s): none in {' or '.join(absent)}"
        for code, p in parts.items()
        if (absent := [s for s, f in (("val", val), ("test", test)) if f > 0 and not p[s]])
    ]
    out["split"] = pd.array([assignment[g] for g in groups], dtype="string")
    out.attrs["split_warnings"] = warnings
    return out


def strata(df: pd.DataFrame, groups: np.ndarray, seed: int) -> dict[str, list]:
    """Class code -> its patient groups in a seeded order. A group's class is its rarest one (rarity by image count
    in the whole table), so rare classes are spread over the splits; the order is free of the input's row order,
    and each class has its own random stream, so adding a class moves no other."""
    rows = pd.DataFrame({"group": groups, "label": df["label"].astype(str), "pid": df["patient_id"].astype(str)})
    rows["rarity"] = rows["label"].map(rows["label"].value_counts())
    first = rows.sort_values(["group", "rarity", "label"]).groupby("group").first()
    group_label, group_key = first["label"], rows.groupby("group")["pid"].min()
    out = {}
    for code in sorted(group_label.unique()):
        members = group_label.index[group_label == code].to_numpy()
        members = members[np.argsort(group_key.loc[members].to_numpy(), kind="stable")]
        out[code] = list(members[np.random.default_rng([seed, *code.encode()]).permutation(len(members))])
    return out


def assign_folds(df: pd.DataFrame, k: int, seed: int = 0) -> np.ndarray:
    """Test fold (0..k-1) per row for patient-level k-fold cross-validation: whole patient groups (see
    `patient_groups`), stratified by class, dealt round-robin so fold sizes differ by at most one group per class
    and the folds' totals stay balanced. Every patient lands in exactly one fold."""
    if k < 2:
        raise RetinaugError(f"k-fold needs at least 2 folds, got {k}")
    groups = patient_groups(df)
    n_groups = len(np.unique(groups))
    if n_groups < k:
        raise RetinaugError(f"cannot make {k} folds from {n_groups} patient(s); lower data.folds or add patients")
    fold_of: dict = {}
    dealt = 0  # continues across classes, so the first folds do not collect every class's remainder
    for members in strata(df, groups, seed).values():
        for g in members:
            fold_of[g] = dealt % k
            dealt += 1
    return np.array([fold_of[g] for g in groups], dtype=int)


def fold_split(df: pd.DataFrame, fold: int, k: int, val: float, seed: int = 0) -> pd.DataFrame:
    """A copy of `df` split for fold `fold` of `k`: its test split is that fold's patients, and `val` (a fraction of
    *all* patients, as without folds) of the others go to validation; the `fold` column records each row's test fold.
    The split seed draws both, so fold i of a run is the same whichever folds ran before."""
    df = df.reset_index(drop=True)
    folds = assign_folds(df, k, seed)
    if not 0 <= fold < k:
        raise RetinaugError(f"fold {fold} does not exist: folds are 0..{k - 1}")
    rest = df[folds != fold]
    inner_val = val * k / (k - 1)
    if inner_val >= 1:
        raise RetinaugError(
            f"data.val {val} leaves no training patients with {k} folds (each fold tests 1/{k}); lower data.val"
        )
    inner = assign_splits(rest, val=inner_val, test=0, seed=seed)
    out = df.copy()
    out["split"] = pd.array(["test"] * len(out), dtype="string")
    out.loc[rest.index, "split"] = inner["split"].to_numpy()
    out["fold"] = folds
    out.attrs["split_warnings"] = inner.attrs.get("split_warnings", []) + [
        f"class {code} has no patient in fold {fold}'s test split"
        for code in sorted(set(df["label"].astype(str)) - set(out.loc[folds == fold, "label"].astype(str)))
    ]
    return out


def check_split(df: pd.DataFrame) -> list[str]:
    """Leakage audit: a patient in two splits, or identical image bytes in two splits. Empty list = clean.

    Missing `sha256` values are computed from the files (read in parallel)."""
    problems: list[str] = []
    splits = df["split"].astype(str)
    per_patient = splits.groupby(df["patient_id"].astype(str)).agg(lambda s: sorted(set(s), key=_split_rank))
    for pid, names in per_patient.items():
        if len(names) > 1:
            n = int((df["patient_id"].astype(str) == pid).sum())
            problems.append(f"patient {pid!r} is in {' and '.join(names)} ({n} images)")
    hashes = _hashes(df, problems)
    frame = pd.DataFrame({"h": hashes, "split": splits.to_numpy(), "path": df["path"].astype(str).to_numpy()}).dropna()
    for _, grp in frame.groupby("h"):
        names = sorted(set(grp["split"]), key=_split_rank)
        if len(names) > 1:
            files = ", ".join(
                f"{p} ({s})" for p, s in grp.drop_duplicates("path")[["path", "split"]].itertuples(index=False)
            )
            problems.append(f"identical image content in {' and '.join(names)}: {files}")
    return problems


def _split_rank(name: str) -> int:
    return SPLIT_ORDER.index(name) if name in SPLIT_ORDER else len(SPLIT_ORDER)


def _hashes(df: pd.DataFrame, problems: list[str]) -> np.ndarray:
    """Content hash per row: the `sha256` column where present, else hashed from the file."""
    from .ingest.checks import hash_files  # local: ingest imports this module

    known = df["sha256"] if "sha256" in df.columns else pd.Series([None] * len(df), index=df.index)
    hashes = known.astype(object).where(known.notna(), None).to_numpy().copy()
    todo = sorted({p for p, h in zip(df["path"].astype(str), hashes) if h is None})
    if todo:
        computed = hash_files(todo, "Hashing images")
        for path in todo:
            if computed[path] is None:
                problems.append(f"cannot read {path} to compare its content")
        for i, p in enumerate(df["path"].astype(str)):
            if hashes[i] is None:
                hashes[i] = computed[p]
    return hashes
