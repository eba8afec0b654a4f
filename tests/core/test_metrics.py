"""Metrics: Frechet distance against closed forms, precision/recall sanity, image grids."""

import numpy as np
import pytest
import torch

from core.metrics import frechet_distance, gaussian_stats, precision_recall
from core.plotting import save_image_grid


def test_frechet_distance_closed_form_diagonal():
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    a, b = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-12)


def test_frechet_distance_general_matches_sqrtm_and_is_symmetric():
    from scipy.linalg import sqrtm

    rng = np.random.default_rng(0)
    m1, m2 = rng.normal(size=(5, 5)), rng.normal(size=(5, 5))
    s1, s2 = m1 @ m1.T + 0.1 * np.eye(5), m2 @ m2.T + 0.1 * np.eye(5)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    ref = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * np.real(sqrtm(s1 @ s2)))
    d = frechet_distance(mu1, s1, mu2, s2)
    assert d == pytest.approx(ref, rel=1e-9)
    assert frechet_distance(mu2, s2, mu1, s1) == pytest.approx(d, rel=1e-9)
    assert frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-9)


def test_frechet_distance_singular_and_errors():
    s = np.diag([1.0, 0.0, 0.0])  # rank-deficient: sqrtm of the product is ill-conditioned
    assert frechet_distance(np.zeros(3), s, np.zeros(3), s) == pytest.approx(0.0, abs=1e-12)
    assert frechet_distance(np.zeros(3), s, np.zeros(3), 4 * s) == pytest.approx(1.0, rel=1e-12)
    with pytest.raises(ValueError, match="shape mismatch"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))
    with pytest.raises(ValueError, match="non-finite"):
        frechet_distance(np.zeros(2), np.eye(2) * np.nan, np.zeros(2), np.eye(2))


def test_gaussian_stats_recover_sample_distribution():
    rng = np.random.default_rng(1)
    cov = np.array([[2.0, 0.5], [0.5, 1.0]])
    x = rng.multivariate_normal([1.0, -1.0], cov, size=20000)
    mu, sigma = gaussian_stats(torch.from_numpy(x))
    np.testing.assert_allclose(mu, [1.0, -1.0], atol=0.05)
    np.testing.assert_allclose(sigma, cov, atol=0.06)
    with pytest.raises(ValueError, match="N >= 2"):
        gaussian_stats(np.zeros((1, 3)))


def test_precision_recall_sanity():
    g = torch.Generator().manual_seed(0)
    real = torch.randn(1000, 2, generator=g)
    same = torch.randn(1000, 2, generator=g)
    p, r = precision_recall(real, same, k=3)
    assert p > 0.9 and r > 0.9
    collapsed = 0.1 * torch.randn(1000, 2, generator=g)  # inside the real manifold, covers little of it
    p, r = precision_recall(real, collapsed, k=3)
    assert p > 0.95 and r < 0.5
    far = torch.randn(1000, 2, generator=g) + 10.0
    assert precision_recall(real, far, k=3) == (0.0, 0.0)
    with pytest.raises(ValueError, match="k must be in"):
        precision_recall(real[:3], far[:3], k=3)


def test_save_image_grid(tmp_path):
    from PIL import Image

    imgs = torch.linspace(-1, 1, 5 * 3 * 4 * 6).reshape(5, 3, 4, 6)
    path = tmp_path / "out" / "grid.png"
    save_image_grid(imgs, path, nrow=3, padding=1)
    with Image.open(path) as im:
        assert im.size == (3 * 7 + 1, 2 * 5 + 1) and im.mode == "RGB"
        arr = np.asarray(im)
    assert arr[1, 1, 0] == 0 and arr[0, 0].tolist() == [0, 0, 0]
    save_image_grid(imgs[:, :1], tmp_path / "grey.png", scale=2)
    with Image.open(tmp_path / "grey.png") as im:
        assert im.mode == "L" and im.size == (2 * (3 * 8 + 2), 2 * (2 * 6 + 2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grey.png", "out"]
    with pytest.raises(ValueError, match="1 or 3"):
        save_image_grid(torch.zeros(2, 2, 4, 4), tmp_path / "bad.png")
