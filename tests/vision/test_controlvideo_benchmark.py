"""ControlVideo's benchmark pieces: colour attributes and their classifier, the small
text-to-image + ControlNet model trained here, and the benchmark end to end on a tiny setting."""

import dataclasses
import json

import pytest
import torch

diffusers = pytest.importorskip("diffusers", reason="diffusers not installed")

from core.runs import ConfigMismatchError  # noqa: E402
from core.training import Trainer  # noqa: E402
from vision.cli import main  # noqa: E402
from vision.controlvideo import VideoEditModel  # noqa: E402
from vision.controlvideo.attributes import (  # noqa: E402
    COLOURS,
    AttributeClassifier,
    attribute_prompt,
    tint,
)
from vision.controlvideo.benchmark import PRESETS, ROWS, ClipSpec, bench_config, run_benchmark  # noqa: E402
from vision.controlvideo.controls import luminance  # noqa: E402
from vision.controlvideo.train import T2IConfig, build_model, image_bank, train_t2i_controlnet  # noqa: E402

torch.set_num_threads(1)
TINY = T2IConfig(size=8, channels=(8, 16), text_dim=8, bank=24, steps=3, batch=4, groups=4)


def test_tint_keeps_luminance_and_sets_the_colour():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 3, 6, 6, generator=g) * 0.4  # dark enough that no channel clips
    for name, rgb in COLOURS.items():
        y = tint(x, name)
        assert torch.allclose(luminance(y), luminance(x), atol=1e-6)
        chroma = y.mean((2, 3)) / y.mean((2, 3)).sum(1, keepdim=True)
        want = torch.tensor(rgb) / sum(rgb)
        assert torch.allclose(chroma, want.expand_as(chroma), atol=1e-5)
    with pytest.raises(ValueError, match="unknown colours"):
        tint(x, "magenta")
    assert attribute_prompt("photo") == "a photo" and attribute_prompt("red") == "a red photo"


def test_attribute_classifier_separates_colours_from_photos():
    bank = image_bank(60, 16, procedural_fraction=0.0, seed=0)
    judge = AttributeClassifier.fit(bank[:40])
    held = bank[40:]
    assert judge.accuracy(held, "photo") >= 0.8
    for name in COLOURS:
        assert judge.accuracy(tint(held, name), name) == 1.0
    assert AttributeClassifier.from_state(judge.state()).predict(held) == judge.predict(held)
    with pytest.raises(ValueError, match="unknown attribute"):
        judge.accuracy(held, "gold")


def test_image_bank_is_deterministic_and_in_range():
    a, b = image_bank(12, 8, seed=3), image_bank(12, 8, seed=3)
    assert a.shape == (12, 3, 8, 8) and torch.equal(a, b)
    assert float(a.min()) >= 0 and float(a.max()) <= 1 and float(a.std()) > 0.05
    assert not torch.equal(a, image_bank(12, 8, seed=4))


def test_training_writes_a_model_folder_and_resumes(tmp_path):
    model = train_t2i_controlnet(TINY, tmp_path, device="cpu", progress=False)
    assert isinstance(model, VideoEditModel)
    loaded = VideoEditModel.load(tmp_path / "model")
    loaded.check_prompt("a purple photo")
    with pytest.raises(ValueError, match="does not know"):
        loaded.check_prompt("a magenta photo")
    first = {k: v.clone() for k, v in loaded.unet.state_dict().items()}
    # a second call loads the finished folder instead of training again
    again = train_t2i_controlnet(TINY, tmp_path, device="cpu", progress=False)
    assert all(torch.equal(first[k], v) for k, v in again.unet.state_dict().items())
    with pytest.raises(ConfigMismatchError, match="another config"):
        train_t2i_controlnet(dataclasses.replace(TINY, steps=4), tmp_path, device="cpu", progress=False)


def test_interrupted_training_resumes_to_the_same_weights(tmp_path, monkeypatch):
    longer = dataclasses.replace(TINY, steps=6)
    train_t2i_controlnet(longer, tmp_path / "straight", device="cpu", progress=False)
    save = Trainer.save_checkpoint

    def crash_after_step_3(self):
        path = save(self)
        if self.step >= 3:
            raise KeyboardInterrupt
        return path

    monkeypatch.setattr(Trainer, "save_checkpoint", crash_after_step_3)
    with pytest.raises(KeyboardInterrupt):
        train_t2i_controlnet(longer, tmp_path / "resumed", device="cpu", progress=False)
    monkeypatch.undo()
    assert not (tmp_path / "resumed" / "model").exists()
    train_t2i_controlnet(longer, tmp_path / "resumed", device="cpu", progress=False)
    straight = VideoEditModel.load(tmp_path / "straight" / "model").unet.state_dict()
    resumed = VideoEditModel.load(tmp_path / "resumed" / "model").unet.state_dict()
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)


def test_training_changes_the_prompt_response(tmp_path):
    """After training, the prompt reaches the noise prediction through cross-attention."""
    model = train_t2i_controlnet(dataclasses.replace(TINY, steps=30), tmp_path, device="cpu", progress=False)
    den = model.denoiser()
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    control = torch.zeros(2, 3, 8, 8)
    t = torch.full((2,), 0.5, dtype=torch.float64)
    with torch.no_grad():
        red = den.eps(
            x, t, encoder_hidden_states=model.encode_prompt("a red photo").expand(2, -1, -1), control=control
        )
        blue = den.eps(
            x, t, encoder_hidden_states=model.encode_prompt("a blue photo").expand(2, -1, -1), control=control
        )
    assert float((red - blue).abs().mean()) > 1e-4


def _tiny_bench(**kw):
    return dataclasses.replace(
        bench_config("quick"), model=TINY, clips=(ClipSpec("tree", 0, 2, ("red",)),), frames=3, steps=2,
        tune_steps=1, **kw,
    )  # fmt: skip


def test_benchmark_end_to_end_and_resume(tmp_path):
    config = _tiny_bench()
    metrics = run_benchmark(config, tmp_path, device="cpu", progress=False)
    assert set(metrics["rows"]) == set(ROWS)
    for row in metrics["rows"].values():
        for k in ("warping_error", "frame_consistency", "edit_accuracy", "edge_f1"):
            assert set(row[k]) == {"mean", "std", "values"} and len(row[k]["values"]) == 1
    assert metrics["rows"]["per_frame"]["warping_ratio_to_per_frame"]["mean"] == pytest.approx(1.0)
    assert metrics["rows"]["keyframe"]["warping_ratio_to_ideal"]["mean"] > 0
    # temporal attention starts as the identity: without tuning it changes nothing
    kf, kt = metrics["per_edit"]["keyframe"], metrics["per_edit"]["keyframe_temporal"]
    assert kf["tree/red"]["warping_error"] == pytest.approx(kt["tree/red"]["warping_error"], abs=1e-6)
    # the ideal recolouring is classified correctly, the source is not
    assert metrics["reference"]["ideal_recolouring"]["edit_accuracy"]["mean"] == 1.0
    assert metrics["reference"]["source"]["edit_accuracy"]["mean"] < 1.0
    assert set(metrics["targets"]) >= {"edit_accuracy_ok", "edge_f1_ok", "warping_error_ok"}
    for name in ("metrics.json", "rows.png", "strip-tree.png", "controlvideo.gif"):
        assert (tmp_path / name).is_file()
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["rows"]["per_frame"]["edge_f1"]["mean"] == metrics["rows"]["per_frame"]["edge_f1"]["mean"]
    # a rerun reads the cached rows: same numbers
    again = run_benchmark(config, tmp_path, device="cpu", progress=False)
    assert again["per_edit"] == metrics["per_edit"]


def test_benchmark_bad_input():
    with pytest.raises(ValueError, match="unknown rows"):
        bench_config("quick", rows=("per_frame", "magic"))
    with pytest.raises(ValueError, match="unknown preset"):
        bench_config("huge")
    with pytest.raises(ValueError, match="not among the model"):
        dataclasses.replace(bench_config("quick"), clips=(ClipSpec("tree", 0, 1, ("magenta",)),))
    assert main(["benchmark", "controlvideo", "--rows", "nope", "--no-progress"]) == 2


def test_paper_preset_builds_and_steps():
    cfg = PRESETS["paper"].model
    model = build_model(cfg)
    from vision.controlvideo.train import TextToImageControl, _loss_fn

    module = TextToImageControl(model)
    loss_fn = _loss_fn(cfg, model.denoiser())
    opt = torch.optim.AdamW(module.parameters(), lr=1e-4)
    images = torch.rand(2, 3, cfg.size, cfg.size)
    for _ in range(2):
        loss = loss_fn(module, (images, (images > 0.5).float()))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert torch.isfinite(loss)
