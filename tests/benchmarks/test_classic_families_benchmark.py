"""The classic-families benchmark driver: every stage at a tiny size, caching, the claims and the
table it assembles, and the likelihood stage's ``paper`` preset building and taking a few steps on
CPU (the diffusion stage's ``paper`` models are the image pipeline's, tested with it)."""

import importlib
import json
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def driver():
    sys.path[:0] = [str(ROOT / "benchmarks")]
    try:
        yield importlib.import_module("classic_families")
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))


@pytest.fixture
def cheap_metrics(driver, monkeypatch):
    """Sample metrics without the cached Fashion-MNIST classifier (it takes minutes to train)."""
    import vision.generation.evaluate
    import vision.generation.quality

    adversarial = importlib.import_module("classic.adversarial")

    def fake(dataset, images, labels=None, *, image_size=None):
        assert images.min() >= -1 and images.max() <= 1 and images.shape[1:] == (1, 28, 28)
        return {
            "fid_fmnist": float(images.mean() + 2),
            "precision": 0.5,
            "recall": 0.5,
            "num_samples": len(images),
        }

    monkeypatch.setattr(vision.generation.quality, "sample_metrics", fake)
    monkeypatch.setattr(adversarial, "sample_metrics", lambda dataset, images: fake(dataset, images))
    monkeypatch.setattr(vision.generation.evaluate, "sample_metrics", fake)


def test_driver_runs_every_stage_and_assembles_the_table(
    driver, cheap_metrics, tmp_path, capsys, monkeypatch
):
    torch.set_num_threads(1)
    out = tmp_path / "bench"
    assert driver.main(["--preset", "smoke", "--device", "cpu", "--out", str(out)]) == 0
    summary = json.loads((out / "metrics.json").read_text())
    for key in ("nll_vae", "nll_iwae5", "nll_iwae50", "nll_nade", "bpd_realnvp", "bpd_vflow", "bpd_resflow",
                "bpd_impflow", "fid_ddpm", "fid_flow_matching", "fid_consistency"):  # fmt: skip
        assert isinstance(summary["metrics"][key], float), key
    claims = summary["claims"]
    assert isinstance(claims["1"]["holds"], bool) and isinstance(claims["2"]["holds"], bool)
    c1 = claims["1"]
    assert c1["holds"] == (
        c1["nll_nats"]["iwae50"] < c1["nll_nats"]["vae"] and all(c1["bound_monotone_in_k"].values())
    )
    assert claims["2"]["holds"] == (claims["2"]["bpd"]["vflow"] <= claims["2"]["bpd"]["realnvp"])
    params = claims["2"]["params"]
    assert max(params.values()) <= 1.35 * min(params.values())  # matched sizes
    # claim 6: every family of the lecture has a row with the same measures
    assert claims["6"]["holds"] and claims["6"]["missing"] == []
    assert {"3", "4", "5"} <= set(claims) and claims["3"]["holds"]
    families = {r["family"] for r in summary["table"]}
    assert {"DDPM (U-Net)", "consistency", "RealNVP", "VFlow", "NADE (binarised)", "CLC-GAN"} <= families
    for name in ("samples.png", "fid_vs_sampling_time.png", "iwae_bounds.png", "flows_bpd.png"):
        assert (out / name).is_file(), name
    printed = capsys.readouterr().out
    assert "claim 1:" in printed and "fid_fmnist" in printed
    # a rerun is served from the stage caches and reproduces the summary
    before = (out / "stages" / "likelihood.json").stat().st_mtime
    assert driver.main(["--preset", "smoke", "--device", "cpu", "--out", str(out)]) == 0
    assert (out / "stages" / "likelihood.json").stat().st_mtime == before
    assert json.loads((out / "metrics.json").read_text())["metrics"] == summary["metrics"]
    # a changed preset retrains what it changes, and only that
    from dataclasses import replace

    from classic import likelihood

    smoke = likelihood.PRESETS["smoke"]
    monkeypatch.setitem(likelihood.PRESETS, "smoke", replace(smoke, steps={**smoke.steps, "realnvp": 4}))
    vae_before = (out / "likelihood" / "vae" / "result.json").stat().st_mtime
    assert (
        driver.main(["--preset", "smoke", "--device", "cpu", "--out", str(out), "--stages", "likelihood"])
        == 0
    )
    realnvp = json.loads((out / "likelihood" / "realnvp" / "result.json").read_text())
    assert realnvp["train"]["steps"] == 4 and realnvp["key"]["steps"] == 4
    assert (out / "likelihood" / "vae" / "result.json").stat().st_mtime == vae_before


def test_likelihood_stage_is_reproducible_whatever_ran_before(driver, cheap_metrics, tmp_path):
    from classic import likelihood

    torch.set_num_threads(1)
    sizes = dict(steps=dict.fromkeys(likelihood.MODELS, 2), train_images=64, test_images=4)
    first = likelihood.run("smoke", tmp_path / "a", "cpu", **sizes)["metrics"]
    torch.rand(1000)  # e.g. a feature classifier trained first in the same process
    assert likelihood.run("smoke", tmp_path / "b", "cpu", **sizes)["metrics"] == first


def test_driver_rejects_unknown_stages(driver):
    with pytest.raises(SystemExit):
        driver.main(["--stages", "likelihood,nonsense"])


def test_paper_preset_builds_with_matched_flow_sizes(driver):
    from classic import likelihood

    models = likelihood.build_models(likelihood.PRESETS["paper"])
    params = {name: likelihood.count_parameters(models[name][0]) for name in likelihood.FLOW_MODELS}
    assert params["vflow"] <= params["realnvp"] and max(params.values()) <= 1.1 * min(params.values())
    assert likelihood.count_parameters(models["nade"][0]) == 2 * 500 * 784 + 500 + 784


@pytest.mark.slow
def test_paper_preset_builds_and_takes_a_few_steps(driver, cheap_metrics, tmp_path):
    from classic import likelihood

    torch.set_num_threads(1)
    steps = dict.fromkeys(likelihood.MODELS, 2)
    res = likelihood.run(
        "paper", tmp_path / "lik", "cpu", steps=steps, train_images=256, test_images=2, fid_samples=2,
        vflow_eval_k=2, grid_samples=2, eval_chunk=2500, ckpt_every=2,
    )  # fmt: skip
    assert res["models"]["vae"]["eval_k"] == 5000 and res["models"]["vae"]["train"]["steps"] == 2
    assert res["models"]["impflow"]["params"] > 50_000  # the paper-sized flows were built
