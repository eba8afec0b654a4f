"""Image pipeline: the train/sample/evaluate CLI at tiny size, every family, clear errors, and
the demo's smoke preset. Uses the OpenCV digits (Debian opencv-doc) and a temporary $ANNEAL_DATA."""

import json

import pytest
import torch

from core.cli import main
from core.data.images import OPENCV_DIGITS_PATH
from core.images import metrics as image_metrics
from core.images.config import image_config
from core.images.distill2d import DISTILL2D_PRESETS, run_distill2d
from core.images.generate import generate
from core.images.models import build_denoiser, load_run
from core.images.train import train

pytestmark = pytest.mark.skipif(not OPENCV_DIGITS_PATH.is_file(), reason="needs Debian opencv-doc")


@pytest.fixture(autouse=True)
def _one_thread_tmp_cache(tmp_path_factory, monkeypatch):
    torch.set_num_threads(1)
    monkeypatch.setenv("ANNEAL_DATA", str(tmp_path_factory.getbasetemp() / "anneal_data"))
    monkeypatch.setitem(image_metrics.CLASSIFIER_EPOCHS, "digits", 1)


@pytest.fixture(scope="module")
def ddpm_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "ddpm"
    torch.set_num_threads(1)
    train(image_config("smoke", dataset="digits", steps=4), out, device="cpu", progress=False)
    return out


def test_cli_train_sample_evaluate(tmp_path, capsys):
    run = tmp_path / "run"
    common = ["--device", "cpu", "--no-progress"]
    argv = [
        "train",
        "--preset",
        "smoke",
        "--dataset",
        "digits",
        "--model",
        "dit",
        "--steps",
        "3",
        "--out",
        str(run),
    ]
    assert main(argv + common) == 0
    assert (run / "config.json").is_file() and (run / "model" / "model.safetensors").is_file()
    assert any((run / "train" / "checkpoints").iterdir())
    assert (
        main(
            ["sample", "--run", str(run), "--steps", "2", "--num", "10", "--out", str(tmp_path / "g.png")]
            + common
        )
        == 0
    )
    assert (tmp_path / "g.png").is_file()
    argv = ["evaluate", "--run", str(run), "--method", "ddim", "--steps", "2", "--samples", "20"]
    assert main(argv + common) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics.pop("train")["steps"] == 3
    (row,) = metrics.values()
    # three training steps: the samples are far from the digits (a metric comparing the
    # reference with itself, or with the data, would give about 0)
    assert row["nfe"] == 2 and row["fid_digits"] > 1.0 and 0 <= row["class_accuracy"] <= 1
    assert list((run / "eval").glob("*.png"))
    assert "fid_digits" in capsys.readouterr().out


def test_families_and_solvers(tmp_path, ddpm_run):
    den, config = load_run(ddpm_run)
    assert config.family == "ddpm" and den.prediction == "v"
    for method, steps, nfe in (("dpm_solver++", 3, 3), ("ddim", 3, 3), ("ddpm", None, 99)):
        x, info = generate(den, config, 4, method=method, steps=steps)
        assert x.shape == (4, 1, 20, 20) and info["nfe"] == nfe and x.abs().max() <= 1
    _, info = generate(den, config, 4, steps=2, cfg_scale=2.0)
    assert info["nfe"] == 2
    cd = train(
        image_config("smoke", dataset="digits", family="consistency", teacher=str(ddpm_run), steps=2),
        tmp_path / "cd", device="cpu", progress=False,
    )  # fmt: skip
    assert cd["steps"] == 2
    den_cd, cfg_cd = load_run(tmp_path / "cd")
    x, info = generate(den_cd, cfg_cd, 4, method="consistency", steps=2)
    assert info["nfe"] == 2 and torch.isfinite(x).all()
    train(image_config("smoke", dataset="digits", family="flow", steps=2), tmp_path / "flow", progress=False)
    reflow = image_config("smoke", dataset="digits", family="reflow", teacher=str(tmp_path / "flow"), steps=2)
    train(reflow, tmp_path / "reflow", device="cpu", progress=False)
    assert (tmp_path / "reflow" / "reflow_pairs.pt").is_file()
    den_rf, cfg_rf = load_run(tmp_path / "reflow")
    assert (
        den_rf.prediction == "velocity"
        and generate(den_rf, cfg_rf, 2, method="euler", steps=1)[1]["nfe"] == 1
    )


def test_bad_input_errors(tmp_path, ddpm_run, capsys):
    den, config = load_run(ddpm_run)
    with pytest.raises(ValueError, match="configured for 20x20"):
        den(torch.randn(2, 1, 28, 28), torch.rand(2), y=torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="channels"):
        den(torch.randn(2, 3, 20, 20), torch.rand(2), y=torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="label out of range"):
        generate(den, config, 2, labels=torch.tensor([0, 10]))
    with pytest.raises(ValueError, match="unknown method"):
        generate(den, config, 2, method="rk45")
    with pytest.raises(ValueError, match="unknown cd_distance 'lpips'"):
        image_config("smoke", cd_distance="lpips")
    with pytest.raises(ValueError, match="unknown model"):
        image_config("smoke", model="resnet")
    with pytest.raises(ValueError, match="needs --teacher"):
        train(image_config("smoke", dataset="digits", family="reflow"), tmp_path / "r", progress=False)
    with pytest.raises(ValueError, match="needs a teacher of family"):
        cfg = image_config("smoke", dataset="digits", family="reflow", teacher=str(ddpm_run))
        train(cfg, tmp_path / "r2", progress=False)
    argv = [
        "train",
        "--preset",
        "smoke",
        "--data-root",
        str(tmp_path),
        "--out",
        str(tmp_path / "x"),
        "--no-progress",
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "train-images-idx3-ubyte" in err and str(tmp_path) in err
    assert main(["evaluate", "--run", str(tmp_path / "nothing")]) == 2
    assert "no trained model" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--model", "resnet"])
    assert build_denoiser(image_config("smoke", model="uvit")).net.null_class == 10


def test_distill2d_smoke(tmp_path):
    m = run_distill2d(DISTILL2D_PRESETS["smoke"], tmp_path)
    assert set(m["results"]) >= {"sds", "vsd"} and (tmp_path / "sds_vs_vsd.png").is_file()
    assert all(r["sliced_wasserstein"] >= 0 for r in m["results"].values())


def test_demo_smoke(tmp_path):
    out = tmp_path / "demo"
    assert main(["demo", "--preset", "smoke", "--out", str(out), "--device", "cpu", "--no-progress"]) == 0
    report = (out / "report.md").read_text()
    assert "six samplers" in report and "image stage" in report and "fid_digits" in report
    assert (out / "image_samples.png").is_file() and (out / "samplers.png").is_file()
    assert "image_stage" in json.loads((out / "metrics.json").read_text())


def test_presets_resolve_per_family_fields():
    quick, cd = image_config("quick"), image_config("quick", family="consistency")
    assert cd.steps != quick.steps and cd.lr != quick.lr  # the consistency fields of the preset
    assert image_config("quick", family="consistency", steps=3).steps == 3  # overrides win
    assert image_config("quick", family="flow").steps == quick.steps
