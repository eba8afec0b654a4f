"""The feature classifier of the image application: a small CNN trained here on a dataset
(digits, Fashion-MNIST), whose penultimate features define ``fid_<dataset>``.

Its Frechet distances are **not** Inception FIDs and are not comparable with published FIDs;
report them under the dataset's name (``fid_fmnist``, ``fid_digits``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from core.checkpoint import ModelMixin
from core.metrics import frechet_distance, gaussian_stats

__all__ = [
    "ClassifierConfig",
    "FeatureClassifier",
    "classifier_accuracy",
    "fid_with_classifier",
    "train_feature_classifier",
]


@dataclass
class ClassifierConfig:
    """Small CNN: three 3x3 convolutions of ``width``, 2 ``width``, 4 ``width`` channels (the last
    two with stride 2), each with GroupNorm and SiLU, global average pooling, a ``feature_dim``
    penultimate layer and a linear head over ``num_classes``."""

    in_channels: int = 1
    num_classes: int = 10
    width: int = 32
    feature_dim: int = 128


class FeatureClassifier(ModelMixin):
    """Images (B, C, H, W) in [-1, 1] -> logits (B, num_classes); :meth:`features` -> (B, feature_dim).

    Saved and loaded with ``save_pretrained`` / ``from_pretrained`` (:class:`core.ModelMixin`)."""

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
    progress: bool = True,
) -> FeatureClassifier:
    """Train a :class:`FeatureClassifier` with Adam and cross-entropy on images (N, C, H, W) in
    [-1, 1] and labels (N,) int64 (random flips are not used: they change some classes' meaning),
    with a progress bar over the optimizer steps unless ``progress`` is False.
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
    bar = tqdm(total=steps, desc="feature classifier", unit="step", disable=not progress)
    for _ in range(epochs):
        perm = torch.randperm(images.shape[0], generator=g)
        for i in range(0, len(perm), batch_size):
            idx = perm[i : i + batch_size]
            loss = F.cross_entropy(model(images[idx].to(device)), labels[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            bar.update()
            bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    bar.close()
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
