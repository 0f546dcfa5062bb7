"""Distribution metrics of the synthetic-data audit: FID, KID and k-NN precision/recall between two feature sets
(rows = images), computed on features the audit's extractor already made, so no Inception network is needed."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

import numpy as np
import torch
from sklearn.neighbors import NearestNeighbors
from torchmetrics.image.kid import KernelInceptionDistance

from .config import AuditConfig


class _Precomputed(torch.nn.Module):
    """torchmetrics' `feature=` hook. Features are computed once by our extractor and passed through, so
    KID, FID, precision/recall and memorization all use the same embedding (and no Inception download)."""

    def __init__(self, dim: int):
        super().__init__()
        self.num_features = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def fid(real: np.ndarray, fake: np.ndarray) -> float | None:
    """Fréchet distance between Gaussian fits of two feature sets; None when either has < 2 samples.

    Same value as torchmetrics' `FrechetInceptionDistance` (the tests check it), computed in sample space:
    with a, b the centred samples / sqrt(n - 1) as rows, Tr sqrt(S_real S_fake) is the nuclear norm of the
    (n_real x n_fake) inner-product matrix a b^T. torchmetrics takes general eigenvalues of a d x d product instead, which took
    11 s for one 512-d FID on this 2-core CPU; this takes milliseconds and needs no d x d matrices."""
    if len(real) < 2 or len(fake) < 2:
        return None
    r, f = torch.from_numpy(real).double(), torch.from_numpy(fake).double()
    a = (r - r.mean(0)) / (len(r) - 1) ** 0.5
    b = (f - f.mean(0)) / (len(f) - 1) ** 0.5
    trace_sqrt = torch.linalg.matrix_norm(a @ b.T, ord="nuc")
    value = (r.mean(0) - f.mean(0)).square().sum() + a.square().sum() + b.square().sum() - 2 * trace_sqrt
    return max(float(value), 0.0)  # tiny negative values are round-off


def kid(
    real: np.ndarray, fake: np.ndarray, subset_size: int, subsets: int, seed: int
) -> tuple[float | None, float | None, int]:
    """KID mean and std over random subsets (size lowered to the smaller set); None below 2 samples."""
    size = min(subset_size, len(real), len(fake))
    if size < 2:
        return None, None, size
    with warnings.catch_warnings():  # "will save all extracted features": these are the features, by design
        warnings.simplefilter("ignore", UserWarning)
        metric = KernelInceptionDistance(feature=_Precomputed(real.shape[1]), subsets=subsets, subset_size=size)
    metric.update(torch.from_numpy(real).double(), real=True)
    metric.update(torch.from_numpy(fake).double(), real=False)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        mean, std = metric.compute()
    return float(mean), float(std), size


def knn_precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3) -> tuple[float | None, float | None]:
    """Improved precision/recall (Kynkäänniemi et al. 2019): precision = share of fake samples inside the
    real k-NN manifold (union of balls reaching each real sample's k-th neighbour); recall = the converse."""
    if len(real) <= k or len(fake) <= k:
        return None, None

    def radii(x: np.ndarray) -> torch.Tensor:  # k+1: each point is its own nearest neighbour
        return torch.from_numpy(NearestNeighbors(n_neighbors=k + 1).fit(x).kneighbors(x)[0][:, -1])

    dist = torch.cdist(torch.from_numpy(fake).double(), torch.from_numpy(real).double())
    precision = (dist <= radii(real)[None, :]).any(dim=1).double().mean()
    recall = (dist.T <= radii(fake)[None, :]).any(dim=1).double().mean()
    return float(precision), float(recall)


@contextlib.contextmanager
def _one_torch_thread() -> Iterator[None]:
    """The metric matrices are small (a few hundred rows): one thread avoids the intra-op pool's spin-waiting,
    which made each KID kernel 20x slower (15 ms vs 0.7 ms) with 2 threads on 2 busy cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def distribution_metrics(real: np.ndarray, fake: np.ndarray, test: np.ndarray, cfg: AuditConfig) -> dict:
    """FID, KID and precision/recall of `fake` against `real` (training images), and the FID of the real `test`
    images against them: the audit's fidelity and diversity entry for one class or for all of them."""
    with _one_torch_thread():
        kid_mean, kid_std, kid_size = kid(real, fake, cfg.kid_subset_size, cfg.kid_subsets, cfg.seed)
        precision, recall = knn_precision_recall(real, fake, cfg.knn_k)
        fids = fid(real, fake), fid(real, test)
    return {
        "fid": fids[0],
        "fid_test_vs_train": fids[1],  # real-vs-real baseline: the scale of "good" in this feature space
        "kid_mean": kid_mean,
        "kid_std": kid_std,
        "kid_subset_size": kid_size,
        "precision": precision,
        "recall": recall,
    }
