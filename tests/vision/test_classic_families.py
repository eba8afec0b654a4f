"""The classic families through the image pipeline: every family trains a few steps at the smoke
preset through the command line, saves, reloads, samples, evaluates and resumes exactly; the
``paper`` preset of every family builds and trains; the data transforms match ``core.data``'s
definitions; bad input gets clear errors. OpenCV digits (Debian opencv-doc), temporary $ANNEAL_DATA."""

import json
import math
import shutil

import pytest
import torch
from safetensors.torch import load_file

from core.data import binarize
from core.data.images import OPENCV_DIGITS_PATH
from vision.cli import main
from vision.generation import quality as image_metrics
from vision.generation.classic import CLASSIC_FAMILIES, prepare_images
from vision.generation.config import PRESETS, image_config
from vision.generation.datasets import load_images
from vision.generation.generate import generate
from vision.generation.models import load_run
from vision.generation.train import train

pytestmark = pytest.mark.skipif(not OPENCV_DIGITS_PATH.is_file(), reason="needs Debian opencv-doc")

FAMILIES = tuple(CLASSIC_FAMILIES)
CPU = ["--device", "cpu", "--no-progress"]
D = 400  # 20 x 20 digits


@pytest.fixture(autouse=True)
def _one_thread_tmp_cache(tmp_path_factory, monkeypatch):
    torch.set_num_threads(1)
    monkeypatch.setenv("ANNEAL_DATA", str(tmp_path_factory.getbasetemp() / "anneal_data"))
    monkeypatch.setitem(image_metrics.CLASSIFIER_EPOCHS, "digits", 1)


def _weights(run):
    return load_file(str(run / "model" / "model.safetensors"))


@pytest.mark.parametrize("family", FAMILIES)
def test_family_trains_samples_evaluates_and_resumes_exactly(tmp_path, family, capsys):
    # 1. the command line: train 4 steps, sample a grid, evaluate
    cli_run = tmp_path / "cli"
    argv = ["train", "--preset", "smoke", "--family", family, "--dataset", "digits", "--steps", "4"]
    assert main(argv + ["--out", str(cli_run)] + CPU) == 0
    saved = json.loads((cli_run / "config.json").read_text())
    assert saved["family"] == family and saved["model"] == CLASSIC_FAMILIES[family].models[0]
    assert main(["sample", "--run", str(cli_run), "--num", "10"] + CPU) == 0
    assert (cli_run / "samples_direct.png").is_file()
    assert main(["evaluate", "--run", str(cli_run), "--samples", "20"] + CPU) == 0
    metrics = json.loads((cli_run / "metrics.json").read_text())
    assert metrics["train"]["steps"] == 4
    row = metrics["direct_n20_s0"]
    assert row["fid_digits"] > 1.0 and (cli_run / "eval" / "direct_n20_s0.png").is_file()
    kind = CLASSIC_FAMILIES[family].data
    if family == "triple_gan":  # the classifier's error on the whole test split; balanced class samples
        assert 0 <= row["test_error"] <= 1 and row["labels"] == 20 and "class_accuracy" in row
    elif kind == "binary":  # nats per image: an untrained model is near D log 2 (a fair coin per pixel)
        assert abs(row["nll"] - D * math.log(2)) < 0.1 * D * math.log(2)
    elif kind == "dequantised":  # bits per dim of 8-bit data: finite, above 0, well above the 8 of a uniform
        assert math.isfinite(row["bpd"]) and row["bpd"] > 0
    else:
        assert "nll" not in row and "bpd" not in row and "class_accuracy" not in row
    out = capsys.readouterr().out
    assert "fid_digits" in out

    # 2. exact resume: the same run interrupted after step 2 (its step-4 checkpoint and model lost)
    #    and rerun ends with the uninterrupted command-line run's weights
    config = image_config("smoke", family=family, dataset="digits", steps=4, ckpt_every=2)
    run = tmp_path / "resumed"
    train(config, run, device="cpu", progress=False)
    shutil.rmtree(run / "train" / "checkpoints" / "step_00000004")
    shutil.rmtree(run / "model")
    assert train(config, run, device="cpu", progress=False)["steps"] == 4
    a, b = _weights(cli_run), _weights(run)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    # 3. reload and sample: images (n, 1, 20, 20) in [-1, 1], a function of the seed
    model, cfg = load_run(run)
    x, info = generate(model, cfg, 6, seed=3)
    assert x.shape == (6, 1, 20, 20) and info["method"] == "direct"
    assert torch.isfinite(x).all() and x.min() >= -1 and x.max() <= 1 and x.std() > 0
    assert torch.equal(generate(model, cfg, 6, seed=3)[0], x)
    assert not torch.equal(generate(model, cfg, 6, seed=4)[0], x)
    if family == "nade":  # binary draws
        assert set(x.unique().tolist()) <= {-1.0, 1.0}


def test_likelihood_is_of_the_binarised_test_split(tmp_path):
    """The NLL ``evaluate`` reports for NADE is its exact NLL of the first ``nll_images`` test
    digits statically binarised with seed 1 (as core.data's binarised Fashion-MNIST test split)."""
    run = tmp_path / "nade"
    config = image_config("smoke", family="nade", dataset="digits", steps=2)
    train(config, run, device="cpu", progress=False)
    assert main(["evaluate", "--run", str(run), "--samples", "10"] + CPU) == 0
    nll = json.loads((run / "metrics.json").read_text())["direct_n10_s0"]["nll"]
    model, _ = load_run(run)
    xt, _ = load_images("digits", "test")
    with torch.no_grad():
        expected = -model.log_prob(binarize(xt[: config.nll_images], 1)).double().mean()
    assert nll == pytest.approx(float(expected), rel=1e-6)


def test_data_transforms_follow_core_definitions():
    x, y = load_images("digits", "test")
    b = prepare_images("vae", x, "test", "digits")
    assert torch.equal(b, binarize(x, 1)) and set(b.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(prepare_images("nade", x, "train", "digits"), binarize(x, 0))
    levels = prepare_images("realnvp", x, "train", "digits")
    assert torch.equal(levels, levels.round()) and levels.min() >= 0 and levels.max() <= 255
    torch.testing.assert_close(levels / 127.5 - 1, x, rtol=0, atol=1e-6)
    deq = prepare_images("vflow", x, "test", "digits")  # test images dequantised with a fixed seed
    u = deq * 256 - levels  # the uniform noise (float32 may round level + u up to level + 1)
    assert u.min() >= 0 and u.max() <= 1 and 0.45 < u.mean() < 0.55 and deq.max() < 1
    assert torch.equal(deq, prepare_images("vflow", x, "test", "digits"))
    assert torch.equal(prepare_images("gan", x, "train", "digits"), x)


def test_paper_presets_build_and_train(tmp_path):
    for family in FAMILIES:
        paper, quick = image_config("paper", family=family), image_config("quick", family=family)
        assert (paper.width, paper.steps) != (quick.width, quick.steps)  # a distinct paper config
        config = image_config("paper", family=family, dataset="digits", steps=2, batch_size=4)
        info = train(config, tmp_path / family, device="cpu", progress=False)
        assert info["steps"] == 2
        model, _ = load_run(tmp_path / family)
        assert sum(p.numel() for p in model.parameters()) > 0
    assert (
        image_config("paper", family="iwae").iwae_k == 50
        and image_config("paper", family="vae").nll_k == 5000
    )
    assert (
        image_config("paper", family="nade").width == 500
        and image_config("paper", family="triple_gan").labels == 100
    )


def test_bad_input_errors(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["train", "--family", "vqvae"])
    err = capsys.readouterr().err
    assert "vqvae" in err and all(f in err for f in FAMILIES)
    with pytest.raises(ValueError, match=r"unknown family 'vqvae'; expected one of ddpm, .*triple_gan"):
        image_config("smoke", family="vqvae")
    with pytest.raises(
        ValueError, match=r"unknown model 'unet' for family 'gan'; expected one of \('conv',\)"
    ):
        image_config("smoke", family="gan", model="unet")
    resized = image_config("smoke", family="realnvp", dataset="digits", image_size=16)
    with pytest.raises(ValueError, match="not on the 256-level grid"):
        train(resized, tmp_path / "resized", progress=False)
    with pytest.raises(ValueError, match="multiple of the 10 classes"):
        train(
            image_config("smoke", family="triple_gan", dataset="digits", labels=15),
            tmp_path / "t",
            progress=False,
        )
    with pytest.raises(ValueError, match="must be binary"):
        prepare_images("vae", torch.zeros(1, 1, 4, 4), "train", "digits")  # fine: binarised
        CLASSIC_FAMILIES["nade"].build(image_config("smoke", family="nade", dataset="digits")).log_prob(
            torch.full((1, D), 0.5)
        )
    assert main(["train", "--family", "gan", "--labels", "100", "--out", str(tmp_path / "x")] + CPU) == 2
    assert "--labels applies to --family triple_gan only" in capsys.readouterr().err
    run = tmp_path / "gan"
    train(image_config("smoke", family="gan", dataset="digits", steps=1), run, progress=False)
    for extra in (["--method", "ddim"], ["--steps", "5"], ["--cfg-scale", "2"]):
        assert main(["sample", "--run", str(run)] + extra + CPU) == 2
        assert "samples directly" in capsys.readouterr().err
    assert main(["evaluate", "--run", str(run), "--steps", "5"] + CPU) == 2
    model, cfg = load_run(run)
    with pytest.raises(ValueError, match="unconditional"):
        generate(model, cfg, 2, labels=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="divisible by 4"):
        train(
            image_config("smoke", family="gan", dataset="digits", image_size=18),
            tmp_path / "g18",
            progress=False,
        )
    assert PRESETS["smoke"].family == "ddpm"  # the diffusion default is unchanged
