"""Sample-quality metrics in the feature space of a classifier trained on the same dataset.

``fid_with_classifier`` is the Frechet distance between Gaussian fits of the penultimate-layer
features of a small CNN (:class:`FeatureClassifier`) trained here on the dataset itself. Name its
values after the dataset (e.g. ``fid_fmnist`` on Fashion-MNIST); they are **not** Inception
FIDs and are not comparable with published FIDs. ``precision_recall`` is the k-NN manifold
estimate of Kynkaanniemi et al. (2019) in the same feature space.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.paths import atomic_write

__all__ = [
    "ClassifierConfig",
    "FeatureClassifier",
    "classifier_accuracy",
    "fid_with_classifier",
    "frechet_distance",
    "gaussian_stats",
    "precision_recall",
    "train_feature_classifier",
]


# --- Frechet distance ----------------------------------------------------------------------------
def gaussian_stats(features: Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and unbiased covariance (D, D), float64, of features (N, D), N >= 2."""
    f = np.asarray(features.detach().cpu() if isinstance(features, Tensor) else features, dtype=np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"features must have shape (N >= 2, D), got {f.shape}")
    return f.mean(0), np.cov(f, rowvar=False).reshape(f.shape[1], f.shape[1])


def _psd_sqrt(a: np.ndarray) -> np.ndarray:
    from scipy.linalg import eigh

    w, v = eigh((a + a.T) / 2)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Squared Frechet (2-Wasserstein) distance between N(mu1, sigma1) and N(mu2, sigma2):
    |mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1^1/2 S2 S1^1/2)^1/2).

    The matrix square root is taken of the symmetric positive semi-definite product
    S1^1/2 S2 S1^1/2 by a symmetric eigendecomposition (eigenvalues clipped at 0), which has
    the same trace as sqrtm(S1 S2) but never turns complex or loses symmetry the way
    ``scipy.linalg.sqrtm`` of the non-symmetric product S1 S2 can for near-singular covariances.
    """
    mu1, mu2 = np.asarray(mu1, np.float64).reshape(-1), np.asarray(mu2, np.float64).reshape(-1)
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    d = mu1.shape[0]
    if mu2.shape != (d,) or s1.shape != (d, d) or s2.shape != (d, d):
        raise ValueError(
            f"shape mismatch: mu1 {mu1.shape}, sigma1 {s1.shape}, mu2 {mu2.shape}, sigma2 {s2.shape}"
        )
    for name, arr in (("mu1", mu1), ("sigma1", s1), ("mu2", mu2), ("sigma2", s2)):
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} contains non-finite values")
    r1 = _psd_sqrt(s1)
    cross = _psd_sqrt(r1 @ s2 @ r1)
    value = float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(cross))
    return max(value, 0.0)


# --- feature classifier --------------------------------------------------------------------------
@dataclass
class ClassifierConfig:
    """Small CNN: three 3x3 convolutions of ``width``, 2 ``width``, 4 ``width`` channels (the last
    two with stride 2), each with GroupNorm and SiLU, global average pooling, a ``feature_dim``
    penultimate layer and a linear head over ``num_classes``."""

    in_channels: int = 1
    num_classes: int = 10
    width: int = 32
    feature_dim: int = 128


class FeatureClassifier(nn.Module):
    """Images (B, C, H, W) in [-1, 1] -> logits (B, num_classes); :meth:`features` -> (B, feature_dim)."""

    def __init__(self, config: ClassifierConfig | None = None) -> None:
        super().__init__()
        self.config = c = config or ClassifierConfig()
        w = c.width
        self.body = nn.Sequential(
            nn.Conv2d(c.in_channels, w, 3, padding=1), nn.GroupNorm(8, w), nn.SiLU(),
            nn.Conv2d(w, 2 * w, 3, stride=2, padding=1), nn.GroupNorm(8, 2 * w), nn.SiLU(),
            nn.Conv2d(2 * w, 4 * w, 3, stride=2, padding=1), nn.GroupNorm(8, 4 * w), nn.SiLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            nn.Linear(4 * w, c.feature_dim), nn.SiLU(),
        )  # fmt: skip
        self.head = nn.Linear(c.feature_dim, c.num_classes)

    def features(self, x: Tensor) -> Tensor:
        """Penultimate features (B, feature_dim)."""
        if x.dim() != 4 or x.shape[1] != self.config.in_channels:
            raise ValueError(
                f"FeatureClassifier expects (B, {self.config.in_channels}, H, W) images, got {tuple(x.shape)}"
            )
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Write ``config.json`` and ``model.safetensors`` into ``directory`` (atomically)."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        with atomic_write(directory / "model.safetensors") as tmp:
            save_file({k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}, str(tmp))
        with atomic_write(directory / "config.json") as tmp:
            tmp.write_text(json.dumps(asdict(self.config), indent=2))

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike) -> FeatureClassifier:
        """Load a classifier written by :meth:`save_pretrained`."""
        from safetensors.torch import load_file

        directory = Path(directory)
        for name in ("config.json", "model.safetensors"):
            if not (directory / name).is_file():
                raise FileNotFoundError(f"{directory / name} not found; write it with save_pretrained")
        model = cls(ClassifierConfig(**json.loads((directory / "config.json").read_text())))
        model.load_state_dict(load_file(str(directory / "model.safetensors")))
        return model.eval()


def train_feature_classifier(
    images: Tensor,
    labels: Tensor,
    *,
    config: ClassifierConfig | None = None,
    epochs: int = 3,
    batch_size: int = 128,
    lr: float = 2e-3,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> FeatureClassifier:
    """Train a :class:`FeatureClassifier` with Adam and cross-entropy on images (N, C, H, W) in
    [-1, 1] and labels (N,) int64 (random flips are not used: they change some classes' meaning).
    Returns the model in eval mode."""
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"{images.shape[0]} images but {labels.shape[0]} labels")
    config = config or ClassifierConfig(in_channels=images.shape[1], num_classes=int(labels.max()) + 1)
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = FeatureClassifier(config).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    steps = epochs * ((images.shape[0] + batch_size - 1) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(images.shape[0], generator=g)
        for i in range(0, len(perm), batch_size):
            idx = perm[i : i + batch_size]
            loss = F.cross_entropy(model(images[idx].to(device)), labels[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return model.eval()


@torch.no_grad()
def _batched(fn, images: Tensor, batch_size: int, device: torch.device) -> Tensor:
    return torch.cat(
        [fn(images[i : i + batch_size].to(device)).float().cpu() for i in range(0, len(images), batch_size)]
    )


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def classifier_accuracy(
    classifier: FeatureClassifier, images: Tensor, labels: Tensor, batch_size: int = 500
) -> float:
    """Fraction of images (N, C, H, W) whose predicted class equals labels (N,)."""
    logits = _batched(classifier, images, batch_size, _device(classifier))
    return float((logits.argmax(1) == labels.cpu()).float().mean())


def fid_with_classifier(
    classifier: FeatureClassifier,
    real: Tensor | tuple[np.ndarray, np.ndarray],
    fake: Tensor,
    *,
    batch_size: int = 500,
) -> float:
    """Frechet distance between Gaussian fits of ``classifier`` features of real and generated
    images (N, C, H, W) in [-1, 1]. ``real`` may be precomputed ``gaussian_stats``. Report it
    under the dataset's name (e.g. ``fid_fmnist``): it is not Inception FID."""
    dev = _device(classifier)
    mu_r, s_r = (
        real
        if isinstance(real, tuple)
        else gaussian_stats(_batched(classifier.features, real, batch_size, dev))
    )
    mu_f, s_f = gaussian_stats(_batched(classifier.features, fake, batch_size, dev))
    return frechet_distance(mu_r, s_r, mu_f, s_f)


# --- precision / recall -------------------------------------------------------------------------
def _kth_radius(feats: Tensor, k: int, chunk: int) -> Tensor:
    radii = []
    for i in range(0, len(feats), chunk):
        d = torch.cdist(feats[i : i + chunk], feats)
        radii.append(d.kthvalue(k + 1, dim=1).values)  # k+1: the point itself is at distance 0
    return torch.cat(radii)


def _coverage(queries: Tensor, ref: Tensor, ref_radii: Tensor, chunk: int) -> float:
    inside = []
    for i in range(0, len(queries), chunk):
        d = torch.cdist(queries[i : i + chunk], ref)
        inside.append((d <= ref_radii[None]).any(dim=1))
    return float(torch.cat(inside).float().mean())


@torch.no_grad()
def precision_recall(real: Tensor, fake: Tensor, k: int = 3, chunk: int = 1024) -> tuple[float, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019) of features real (N, D), fake (M, D).

    Each set's manifold is the union of balls around its points with radius the distance to
    the k-th nearest neighbour in the same set. Precision = fraction of fake points inside the
    real manifold; recall = fraction of real points inside the fake manifold.
    """
    if real.dim() != 2 or fake.dim() != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(
            f"features must be (N, D) and (M, D), got {tuple(real.shape)} and {tuple(fake.shape)}"
        )
    if not 1 <= k < min(len(real), len(fake)):
        raise ValueError(f"k must be in 1..{min(len(real), len(fake)) - 1}, got {k}")
    real, fake = real.double(), fake.double()
    precision = _coverage(fake, real, _kth_radius(real, k, chunk), chunk)
    recall = _coverage(real, fake, _kth_radius(fake, k, chunk), chunk)
    return precision, recall
