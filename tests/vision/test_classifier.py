"""The feature classifier: it separates toy classes, its FID orders sample sets, it round-trips."""

import pytest
import torch

from core.metrics import gaussian_stats
from vision.classifier import (
    ClassifierConfig,
    FeatureClassifier,
    classifier_accuracy,
    fid_with_classifier,
    train_feature_classifier,
)


def _toy_images(n, g):
    """Two classes of 12x12 images: a bright left half or a bright right half, plus noise."""
    y = torch.randint(0, 2, (n,), generator=g)
    x = -torch.ones(n, 1, 12, 12)
    x[y == 0, :, :, :6] = 1.0
    x[y == 1, :, :, 6:] = 1.0
    return (x + 0.3 * torch.randn(x.shape, generator=g)).clamp(-1, 1), y


def test_feature_classifier_fid_and_round_trip(tmp_path):
    g = torch.Generator().manual_seed(0)
    x, y = _toy_images(512, g)
    clf = train_feature_classifier(
        x, y, config=ClassifierConfig(1, 2, width=8, feature_dim=16), epochs=2, batch_size=64
    )
    xt, yt = _toy_images(256, g)
    assert classifier_accuracy(clf, xt, yt) > 0.95
    x2, y2 = _toy_images(256, g)
    same = fid_with_classifier(clf, xt, x2)
    one_class = fid_with_classifier(clf, xt, x2[y2 == 0])
    noise = fid_with_classifier(clf, xt, torch.rand(256, 1, 12, 12) * 2 - 1)
    assert same < one_class and same < noise
    stats = gaussian_stats(torch.cat([clf.features(xt[i : i + 100]) for i in range(0, 256, 100)]).detach())
    assert fid_with_classifier(clf, stats, x2) == pytest.approx(same, rel=1e-4)
    clf.save_pretrained(tmp_path / "clf")
    back = FeatureClassifier.from_pretrained(tmp_path / "clf")
    torch.testing.assert_close(back(xt[:4]), clf(xt[:4]))
    with pytest.raises(ValueError, match=r"expects \(B, 1, H, W\)"):
        clf(torch.randn(2, 3, 12, 12))
    with pytest.raises(FileNotFoundError, match="config.json"):
        FeatureClassifier.from_pretrained(tmp_path)
