"""Analytic-DPM on the exact oracle: variance bounds, the Gamma estimate and cache, NLL and samples."""

import os

import pytest
import torch

import core
from benchmarks.analytic_dpm import analytic_dpm_nll, analytic_dpm_sample_error
from core.likelihood import nll_bound, nll_bounds
from core.oracle import GaussianMixture
from core.sampling import analytic
from core.sampling.analytic import (
    GammaTable,
    analytic_variance,
    estimate_gamma,
    gamma_cache_key,
    load_gamma,
    step_coefficients,
)


@pytest.fixture(scope="module")
def mixture():
    return GaussianMixture.random(2, 8, seed=0)


def test_gamma_matches_closed_form_for_one_gaussian():
    # One Gaussian N(m, S): eps-hat = sigma C^{-1} (x - alpha m), so Gamma = sigma^2 tr(C^{-1}) / d.
    base = GaussianMixture.random(3, 1, seed=2)
    gm = GaussianMixture(torch.ones(1), base.means, base.covs)
    ts = torch.tensor([0.01, 0.1, 0.3, 0.6, 1.0], dtype=torch.float64)
    table = estimate_gamma(
        gm.as_denoiser(), gm.sample(4000), ts, n_samples=4000, generator=torch.Generator().manual_seed(0)
    )
    evals = torch.linalg.eigvalsh(gm.covs[0])
    a, s = gm.schedule.alpha(ts)[:, None], gm.schedule.sigma(ts)[:, None]
    exact = (s**2 / (a**2 * evals + s**2)).mean(1)
    torch.testing.assert_close(table.gamma, exact, atol=0.02, rtol=0)
    torch.testing.assert_close(table(ts), table.gamma)


def test_posterior_covariance_identity(mixture):
    # E tr Cov[x0 | x_t] / d = (sigma_t / alpha_t)^2 (1 - Gamma_t): the identity behind Theorem 1.
    den = mixture.as_denoiser()
    x0 = mixture.sample(20000, torch.Generator().manual_seed(0))
    # Times where 1 - Gamma is not tiny: there a Monte-Carlo Gamma pins (sigma / alpha)^2 (1 - Gamma).
    ts = torch.tensor([0.02, 0.1, 0.3], dtype=torch.float64)
    table = estimate_gamma(den, x0, ts, n_samples=20000, generator=torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(1)
    for j, t in enumerate(ts.tolist()):
        a, s = float(mixture.schedule.alpha(t)), float(mixture.schedule.sigma(t))
        xt = a * x0 + s * torch.randn(x0.shape, generator=g, dtype=torch.float64)
        mse = float((x0 - den.x0(xt, t)).pow(2).mean())
        assert mse == pytest.approx((s / a) ** 2 * (1 - float(table.gamma[j])), rel=0.03)


def test_analytic_variance_inside_clipping_bounds(mixture):
    sch = mixture.schedule
    t = torch.linspace(1.0, 0.02, 20, dtype=torch.float64)
    s = t - 0.01
    for eta in (1.0, 0.0):
        for gamma in (
            torch.linspace(-0.3, 1.3, 20, dtype=torch.float64),
            torch.rand(20, dtype=torch.float64),
        ):
            var, lo, hi = analytic_variance(sch, t, s, gamma, eta=eta, return_bounds=True)
            assert bool((lo <= var).all() and (var <= hi).all())
            inside = (gamma >= 0) & (gamma <= 1)
            c = step_coefficients(sch.alpha(t), sch.sigma(t), sch.alpha(s), sch.sigma(s), eta)
            raw = c["lambda2"] + c["c_x0"] ** 2 * c["cov_scale"] * (1 - gamma)
            torch.testing.assert_close(var[inside], raw[inside])
            torch.testing.assert_close(lo, c["lambda2"])  # lambda^2: beta~ (eta = 1) or 0 (eta = 0)
    # The data-range bound is tighter than the Gamma >= 0 bound at high noise.
    _, _, hi_free = analytic_variance(sch, t, s, torch.zeros(20), return_bounds=True)
    _, _, hi_box = analytic_variance(sch, t, s, torch.zeros(20), data_range=(-1.0, 1.0), return_bounds=True)
    assert bool((hi_box <= hi_free + 1e-15).all()) and bool((hi_box[:5] < hi_free[:5]).all())
    # eta = 1: beta~ is the lower bound and DDPM's sigma_t^2 (1 - e^{-2h}) = beta the forward variance.
    c = step_coefficients(sch.alpha(t), sch.sigma(t), sch.alpha(s), sch.sigma(s), 1.0)
    torch.testing.assert_close(c["beta"], 1 - sch.alpha(t) ** 2 / sch.alpha(s) ** 2)


def test_gamma_cache_round_trip_and_atomic_write(tmp_path, mixture, monkeypatch):
    den = mixture.as_denoiser()
    ts = torch.linspace(0.01, 1.0, 7, dtype=torch.float64)
    data = mixture.sample(64)
    table = estimate_gamma(den, data, ts, n_samples=64, cache_dir=tmp_path, model_id="oracle-v1")
    files = list(tmp_path.iterdir())
    assert len(files) == 1 and files[0].suffix == ".safetensors"
    # A second call reads the file: the network is never evaluated.
    broken = core.Denoiser(lambda x, t: 1 / 0, den.schedule)
    again = estimate_gamma(broken, data, ts, n_samples=64, cache_dir=tmp_path, model_id="oracle-v1")
    torch.testing.assert_close(again.gamma, table.gamma)
    key = gamma_cache_key(den.schedule, ts, "oracle-v1", 64)
    torch.testing.assert_close(load_gamma(files[0], key).gamma, table.gamma)
    with pytest.raises(ValueError, match="computed under key"):
        load_gamma(files[0], gamma_cache_key(den.schedule, ts, "other-model", 64))
    with pytest.raises(ValueError, match="model_id"):
        estimate_gamma(den, data, ts, n_samples=64, cache_dir=tmp_path)

    # A write that dies midway leaves neither a partial target nor a temporary file.
    def dying_save(tensors, path, metadata=None):
        with open(path, "wb") as f:
            f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(analytic, "save_file", dying_save)
    with pytest.raises(OSError, match="disk full"):
        estimate_gamma(den, data, ts, n_samples=32, cache_dir=tmp_path, model_id="oracle-v1")
    assert sorted(os.listdir(tmp_path)) == [files[0].name]


def test_analytic_samplers_need_gamma(mixture):
    den = mixture.as_denoiser()
    x = torch.randn(4, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="estimate_gamma"):
        core.sample(den, x, method="analytic_ddpm", steps=5)
    with pytest.raises(ValueError, match="tabulated"):
        table = GammaTable(
            torch.tensor([0.5, 1.0], dtype=torch.float64), torch.tensor([0.2, 0.9], dtype=torch.float64)
        )
        core.sample(den, x, method="analytic_ddim", steps=5, gamma=table)


def test_analytic_nll_bound_is_lowest_at_10_25_50_steps():
    for row in analytic_dpm_nll(steps=(10, 25, 50)):
        assert row["analytic"] < row["beta"] and row["analytic"] < row["beta_tilde"], row


def test_analytic_ddpm_has_lowest_sample_error_at_10_steps():
    sw = analytic_dpm_sample_error(steps=10)
    assert sw["analytic_ddpm"] < sw["ddpm_beta"] and sw["analytic_ddpm"] < sw["ddpm_beta_tilde"], sw
    assert sw["analytic_ddpm"] > sw["noise_floor"]


def test_nll_bound_accepts_explicit_variances_and_discretized_decoder(mixture):
    den = mixture.as_denoiser()
    x0 = mixture.sample(500, torch.Generator().manual_seed(0))
    ts = torch.linspace(1.0, 1e-3, 8, dtype=torch.float64)
    named = nll_bound(den, x0, ts, "beta", generator=torch.Generator().manual_seed(1))
    explicit = nll_bound(den, x0, ts, named.variances, generator=torch.Generator().manual_seed(1))
    assert explicit.total == pytest.approx(named.total, rel=1e-12)
    assert named.total == pytest.approx(named.prior + float(named.steps.sum()) + named.decoder, rel=1e-12)
    x_img = (x0 / 4).clamp(-1, 1)
    gamma = estimate_gamma(den, x_img, ts, n_samples=200)
    res = nll_bounds(den, x_img, ts, ("analytic", "beta"), gamma=gamma, decoder="discretized")
    assert all(0 < r.decoder and torch.isfinite(torch.tensor(r.total)) for r in res)
    with pytest.raises(ValueError, match="unknown variance"):
        nll_bound(den, x0, ts, "sigma")
    with pytest.raises(ValueError, match="strictly decreasing"):
        nll_bound(den, x0, ts.flip(0), "beta")
