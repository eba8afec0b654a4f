"""Sample quality of image generators in the feature space of a classifier trained here.

``feature_classifier(dataset)`` trains a :class:`vision.classifier.FeatureClassifier` on the dataset's
training split once and caches it under ``$ANNEAL_DATA/fid_classifiers/<dataset>/`` (written
atomically, deterministic from its seed), with its test accuracy and the Gaussian statistics of
the test-set features. ``sample_metrics`` reports the Frechet distance of generated images to
those statistics under the dataset's name (``fid_fmnist``, ``fid_digits``: **not** Inception FID),
precision/recall against test features and the classifier's accuracy on the intended labels.
"""

from __future__ import annotations

import fcntl
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from core.data.paths import data_root
from core.files import atomic_directory, read_json, write_json
from core.metrics import frechet_distance, gaussian_stats, precision_recall

from ..classifier import ClassifierConfig, FeatureClassifier, classifier_accuracy, train_feature_classifier
from .datasets import DATASETS, check_images, load_images

__all__ = ["CLASSIFIER_EPOCHS", "classifier_dir", "feature_classifier", "sample_metrics"]

#: Training epochs of the cached classifier per dataset (its test accuracy is recorded in ``info.json``).
CLASSIFIER_EPOCHS = {"fashion_mnist": 8, "digits": 8}


def classifier_dir(dataset: str, image_size: int) -> Path:
    """Cache folder of the feature classifier of ``dataset`` at ``image_size``."""
    return data_root() / "fid_classifiers" / f"{dataset}_{image_size}px"


def _features(model: FeatureClassifier, x: Tensor, batch: int = 500) -> Tensor:
    with torch.no_grad():
        return torch.cat([model.features(x[i : i + batch]) for i in range(0, len(x), batch)])


def feature_classifier(
    dataset: str, image_size: int | None = None, *, seed: int = 0
) -> tuple[FeatureClassifier, dict]:
    """The cached feature classifier of ``dataset`` (trained on first use) and its info dict
    ``{"test_accuracy", "mu", "sigma", ...}`` (mu (D,), sigma (D, D): test-set feature stats)."""
    info = DATASETS[dataset] if dataset in DATASETS else None
    if info is None:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of {sorted(DATASETS)}")
    size = image_size or info.image_size
    folder = classifier_dir(dataset, size)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / f".{folder.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one process trains; concurrent ones wait, then load
        cached = _load_classifier(folder)
        if cached is None:
            _train_classifier(dataset, size, folder, seed)
            cached = _load_classifier(folder, strict=True)
    return cached


def _load_classifier(folder: Path, strict: bool = False) -> tuple[FeatureClassifier, dict] | None:
    """The cached classifier and its info, or None when ``folder`` holds none or a damaged one
    (then it is retrained and replaced); ``strict`` raises instead."""
    if not (folder / "info.json").is_file() and not strict:
        return None
    try:
        model = FeatureClassifier.from_pretrained(folder)
        meta = read_json(folder / "info.json")
        with np.load(folder / "test_stats.npz") as stats:
            arrays = {k: stats[k] for k in ("mu", "sigma", "features")}
    except (OSError, ValueError, KeyError, TypeError) as e:
        if strict:
            raise
        warnings.warn(
            f"retraining the feature classifier: the cache {folder} is unreadable ({e})", stacklevel=3
        )
        return None
    return model, {**meta, **arrays}


def _train_classifier(dataset: str, size: int, folder: Path, seed: int) -> None:
    """Train the classifier and cache it in ``folder`` (replacing what is there, atomically)."""
    info = DATASETS[dataset]
    resize = None if size == info.image_size else size
    x, y = load_images(dataset, "train", size=resize)
    xt, yt = load_images(dataset, "test", size=resize)
    config = ClassifierConfig(in_channels=info.channels, num_classes=info.num_classes)
    model = train_feature_classifier(x, y, config=config, epochs=CLASSIFIER_EPOCHS[dataset], seed=seed)
    acc = classifier_accuracy(model, xt, yt)
    mu, sigma = gaussian_stats(_features(model, xt))
    meta = {"dataset": dataset, "image_size": size, "seed": seed, "test_accuracy": acc}
    meta |= {"epochs": CLASSIFIER_EPOCHS[dataset], "test_size": len(xt)}
    with atomic_directory(folder) as tmp:
        model.save_pretrained(tmp)
        np.savez(tmp / "test_stats.npz", mu=mu, sigma=sigma, features=_features(model, xt).numpy())
        write_json(tmp / "info.json", meta)


def sample_metrics(
    dataset: str, images: Tensor, labels: Tensor | None = None, *, image_size: int | None = None
) -> dict[str, float]:
    """Metrics of generated images (N, C, H, W) in [-1, 1] (N >= 2) against the test split:
    ``fid_<dataset>``, ``precision``, ``recall`` (k = 3, against a fixed random subset of N test
    images) and, given the intended labels (N,),
    ``class_accuracy`` of the held-out classifier on the samples."""
    info = DATASETS[dataset]
    size = image_size or info.image_size
    check_images(images, info.channels, size, "generated images")
    model, meta = feature_classifier(dataset, size)
    x = images.detach().float().cpu().clamp(-1, 1)
    feats = _features(model, x)
    mu, sigma = gaussian_stats(feats)
    out = {info.fid_name: frechet_distance(meta["mu"], meta["sigma"], mu, sigma), "num_samples": len(x)}
    real = torch.from_numpy(meta["features"])
    real = real[torch.randperm(len(real), generator=torch.Generator().manual_seed(0))[: max(len(x), 2)]]
    out["precision"], out["recall"] = precision_recall(real, feats, k=3)
    if labels is not None:
        out["class_accuracy"] = classifier_accuracy(model, x, labels.cpu())
    return out
