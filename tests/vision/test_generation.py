"""Image generation: the train/sample/evaluate CLI at tiny size, every family, clear errors, and
the demo's smoke preset. Uses the OpenCV digits (Debian opencv-doc) and a temporary $ANNEAL_DATA."""

import json
import shutil

import pytest
import torch

from core.data.images import OPENCV_DIGITS_PATH
from core.runs import ConfigMismatchError, check_demo_output
from vision.cli import main
from vision.generation import quality as image_metrics
from vision.generation.config import image_config
from vision.generation.evaluate import eval_key, evaluate_run
from vision.generation.generate import generate
from vision.generation.models import PixelShuffled, build_denoiser, load_run
from vision.generation.train import _load_pairs, train

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


def test_demo_smoke(tmp_path):
    out = tmp_path / "demo"
    assert main(["demo", "--preset", "smoke", "--out", str(out), "--device", "cpu", "--no-progress"]) == 0
    report = (out / "report.md").read_text()
    assert report.startswith("## vision") and "fid_digits" in report and "](./image_samples.png)" in report
    assert (out / "image_samples.png").is_file()
    metrics = check_demo_output(out, "vision")
    assert [r["solver"] for r in metrics["solvers"]] == ["DDIM", "DPM-Solver++(2M)"]
    assert all(r["nfe"] == 10 for r in metrics["solvers"])
    assert (out / metrics["run"] / "model" / "model.safetensors").is_file()
    assert "## vision — ControlVideo" in report and "](./controlvideo/strip-bikes.png)" in report
    cv = json.loads((out / "controlvideo" / "metrics.json").read_text())
    assert set(cv["rows"]) == {"per_frame", "controlvideo"}


def test_presets_resolve_per_family_fields():
    quick, cd = image_config("quick"), image_config("quick", family="consistency")
    assert cd.steps != quick.steps and cd.lr != quick.lr  # the consistency fields of the preset
    assert image_config("quick", family="consistency", steps=3).steps == 3  # overrides win
    assert image_config("quick", family="flow").steps == quick.steps


def test_run_model_folder_loads_alone_with_from_pretrained(ddpm_run):
    den, config = load_run(ddpm_run)
    net = PixelShuffled.from_pretrained(ddpm_run / "model")  # the smoke U-Net runs pixel-unshuffled
    assert net.init_config["net"].config.image_size == config.image_size // config.patch
    x, t, y = torch.randn(2, 1, 20, 20), torch.rand(2), torch.tensor([1, 2])
    with torch.no_grad():
        torch.testing.assert_close(net(x, t, y=y), den.net(x, t, y=y), rtol=0, atol=0)


def test_train_refuses_a_run_of_another_config(ddpm_run):
    before = sorted(p.name for p in (ddpm_run / "train" / "checkpoints").iterdir())
    for change in (dict(steps=5), dict(dataset="fashion_mnist")):
        with pytest.raises(ConfigMismatchError, match="another config"):
            train(
                image_config("smoke", **{"dataset": "digits", "steps": 4, **change}), ddpm_run, progress=False
            )
    assert sorted(p.name for p in (ddpm_run / "train" / "checkpoints").iterdir()) == before


def test_evaluation_cache_follows_the_model(tmp_path, ddpm_run):
    run = tmp_path / "run"
    shutil.copytree(ddpm_run, run)
    kw = dict(method="ddim", steps=2, samples=20, device="cpu")
    first = evaluate_run(run, **kw)
    assert evaluate_run(run, **kw) == first  # cached
    net = PixelShuffled.from_pretrained(run / "model")  # "retrain": other weights, same config
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    net.save_pretrained(run / "model")
    second = evaluate_run(run, **kw)
    assert second["model"] != first["model"] and second["fid_digits"] != first["fid_digits"]
    assert json.loads((run / "metrics.json").read_text())[eval_key("ddim", 2, 1.0, 20, 0)] == second


def test_damaged_caches_are_regenerated(tmp_path):
    pairs = tmp_path / "reflow_pairs.pt"
    pairs.write_bytes(b"\x80\x02truncated")
    with pytest.warns(UserWarning, match="could not read"):
        assert _load_pairs(pairs, 4, (1, 8, 8)) is None
    torch.save({"x": torch.zeros(3, 1, 8, 8), "noise": torch.zeros(3, 1, 8, 8), "y": torch.zeros(3)}, pairs)
    with pytest.warns(UserWarning, match=r"holds \(3, 1, 8, 8\), expected \(4, 1, 8, 8\)"):
        assert _load_pairs(pairs, 4, (1, 8, 8)) is None
    folder = tmp_path / "classifier"
    folder.mkdir()
    (folder / "info.json").write_text("{}")
    (folder / "config.json").write_text('{"_class_name": "FeatureClassifier"}')
    (folder / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.warns(UserWarning, match="retraining the feature classifier"):
        assert image_metrics._load_classifier(folder) is None
