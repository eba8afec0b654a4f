"""ControlVideo editing end to end on tiny random diffusers model folders saved to disk: DDIM
inversion + reconstruction, one-shot tuning, clips and control maps, ``python -m vision edit-video``."""

import json

import numpy as np
import pytest
import torch

diffusers = pytest.importorskip("diffusers", reason="diffusers not installed")

from vision.cli import main  # noqa: E402
from vision.controlvideo import (  # noqa: E402
    EditConfig,
    VideoEditModel,
    WordTextEncoder,
    control_maps,
    edit_clip,
    read_video,
    sample_clips,
    trainable_parameters,
    tune,
    write_gif,
    write_mp4,
    write_strip,
)

torch.set_num_threads(1)
VOCAB = ["a", "car", "red", "blue", "green", "photo", "of", "street"]


def _folder(root, latent: bool):
    torch.manual_seed(0)
    c = 4 if latent else 3
    unet = diffusers.UNet2DConditionModel(
        sample_size=8, in_channels=c, out_channels=c, layers_per_block=1, block_out_channels=(8, 16),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=16, attention_head_dim=4, norm_num_groups=4,
    )  # fmt: skip
    with torch.no_grad():  # a small, smooth noise prediction, as a trained model's
        unet.conv_out.weight.mul_(0.1)
        unet.conv_out.bias.zero_()
    embed = (8, 16) if latent else (8,)  # the ControlNet maps pixels to the latent resolution
    controlnet = diffusers.ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=embed)
    with torch.no_grad():
        zero_init = (
            controlnet.controlnet_down_blocks,
            controlnet.controlnet_mid_block,
            controlnet.controlnet_cond_embedding.conv_out,
        )
        for p in (p for m in zero_init for p in m.parameters()):
            p.normal_(0.0, 0.05)
    vae = None
    if latent:
        vae = diffusers.AutoencoderKL(
            in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16),
            down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
            up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"), norm_num_groups=4,
        )  # fmt: skip
    scheduler = diffusers.DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False
    )
    text = WordTextEncoder(VOCAB, dim=16, max_length=6)
    model = VideoEditModel(unet, controlnet, text, dict(scheduler.config), vae)
    return model.save(root / ("latent" if latent else "pixel"))


@pytest.fixture(scope="module")
def pixel_folder(tmp_path_factory):
    return _folder(tmp_path_factory.mktemp("models"), latent=False)


@pytest.fixture(scope="module")
def latent_folder(tmp_path_factory):
    return _folder(tmp_path_factory.mktemp("models"), latent=True)


def _clip(frames=3, size=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(1, 3, size, size, generator=g)
    return (base + 0.1 * torch.randn(frames, 3, size, size, generator=g)).clamp(0, 1)


def test_inversion_then_reconstruction_returns_the_clip(pixel_folder):
    """Invert with the source prompt, sample back with it (guidance 1) on the same grid: the
    error is first order in the number of DDIM steps (four times the steps, about a quarter of
    the error), while sampling back with another prompt does not return the clip."""
    model = VideoEditModel.load(pixel_folder)
    clip = _clip()
    control = control_maps(clip, "canny")
    errors = []
    for steps in (5, 20):
        out = edit_clip(model, clip, control, "a car", "a car", EditConfig(steps=steps, guidance=1.0))
        errors.append(float((out["edited"] - clip).abs().mean()))
    a_T = float(model.denoiser().schedule.alpha(torch.tensor(1.0, dtype=torch.float64)))
    # the network moved the inverted state away from the scaled clip (not a trivial inversion)
    assert float((out["inverted"] - a_T * (2 * clip - 1)).abs().mean()) > 0.02
    assert errors[1] < 0.05, errors
    assert errors[0] / errors[1] > 2.5, errors
    other = edit_clip(model, clip, control, "a car", "a blue street", EditConfig(steps=20, guidance=1.0))
    assert float((other["edited"] - clip).abs().mean()) > 1.5 * errors[1]


def test_edit_follows_prompt_guidance_and_control(pixel_folder):
    model = VideoEditModel.load(pixel_folder)
    clip = _clip()
    canny, gray = control_maps(clip, "canny"), control_maps(clip, "gray")
    cfg = EditConfig(steps=4, guidance=1.0)
    base = edit_clip(model, clip, canny, "a car", "a car", cfg)["edited"]
    red = edit_clip(model, clip, canny, "a car", "a red car", EditConfig(steps=4, guidance=6.0))["edited"]
    other = edit_clip(model, clip, gray, "a car", "a car", cfg)["edited"]
    assert red.shape == base.shape == clip.shape and 0 <= float(red.min()) and float(red.max()) <= 1
    assert float((red - base).abs().mean()) > 1e-3
    assert float((other - base).abs().mean()) > 1e-4


def test_tuning_moves_only_the_selected_parameters(pixel_folder):
    model = VideoEditModel.load(pixel_folder)
    clip = _clip()
    model.inflate(clip.shape[0])
    before = {
        (i, n): p.detach().clone()
        for i, m in enumerate((model.unet, model.controlnet))
        for n, p in m.named_parameters()
    }
    losses = tune(
        model, model.encode(clip), model.encode_prompt("a car"), control_maps(clip, "canny"), steps=2, lr=1e-2
    )
    assert len(losses) == 2 and all(np.isfinite(losses))
    trainable_parameters([model.unet, model.controlnet])
    selected = {
        (i, n)
        for i, m in enumerate((model.unet, model.controlnet))
        for n, p in m.named_parameters()
        if p.requires_grad
    }
    changed = {
        (i, n)
        for i, m in enumerate((model.unet, model.controlnet))
        for n, p in m.named_parameters()
        if not torch.equal(p, before[(i, n)])
    }
    assert changed and changed <= selected
    assert any("attn_temp" in n for _, n in changed)


def test_clips_decode_crop_and_write(tmp_path):
    clips = sample_clips()
    if "vtest" not in clips:
        pytest.skip("opencv-doc's vtest.avi is not installed")
    clip = read_video(clips["vtest"], 4, (12, 16), stride=2, start=5)
    assert clip.shape == (4, 3, 12, 16) and clip.dtype == torch.float32
    assert 0 <= float(clip.min()) and float(clip.max()) <= 1 and float(clip.std()) > 0.02
    write_gif(clip, tmp_path / "c.gif")
    write_mp4(clip, tmp_path / "c.mp4")
    from PIL import Image

    with Image.open(tmp_path / "c.gif") as gif:
        assert gif.n_frames == 4 and gif.size == (16, 12)
    back = read_video(tmp_path / "c.mp4", 4, (12, 16))
    assert float((back - clip).abs().mean()) < 0.1  # lossy codec
    write_strip([clip, clip], tmp_path / "s.png", scale=2)
    with Image.open(tmp_path / "s.png") as png:
        assert png.size == (2 * (4 * 18 + 2), 2 * (2 * 14 + 2))
    with pytest.raises(ValueError, match="has 4 decodable frames"):
        read_video(tmp_path / "c.mp4", 5, 8)
    (tmp_path / "bad.avi").write_bytes(b"not a video at all" * 10)
    with pytest.raises(ValueError, match="could not decode video"):
        read_video(tmp_path / "bad.avi", 2, 8)
    with pytest.raises(FileNotFoundError):
        read_video(tmp_path / "missing.mp4", 2, 8)


def test_control_maps_of_a_known_image():
    square = torch.zeros(1, 3, 24, 24)
    square[:, :, 8:16, 8:16] = 1.0
    edges = control_maps(square, "canny")[0, 0]
    ys, xs = torch.nonzero(edges, as_tuple=True)
    assert len(ys) > 20
    # every edge pixel lies within a pixel of the square's border
    dist = torch.minimum((ys - 7.5).abs().clamp(max=99), (ys - 15.5).abs())
    dist = torch.minimum(dist, torch.minimum((xs - 7.5).abs(), (xs - 15.5).abs()))
    assert float(dist.max()) <= 1.0
    gray = control_maps(torch.tensor([0.2, 0.4, 0.6]).view(1, 3, 1, 1).expand(1, 3, 2, 2), "gray")
    torch.testing.assert_close(gray, torch.full((1, 3, 2, 2), 0.299 * 0.2 + 0.587 * 0.4 + 0.114 * 0.6))
    with pytest.raises(ValueError, match="unknown control type 'depth'"):
        control_maps(square, "depth")


def test_prompt_vocabulary_is_checked():
    enc = WordTextEncoder(VOCAB, dim=16, max_length=4)
    assert enc.encode(["a red car", ""]).shape == (2, 4, 16)
    with pytest.raises(ValueError, match=r"\['purple'\].*knows 8 words: a, blue, car"):
        enc.check("a purple car")
    with pytest.raises(ValueError, match="at most 4 fit"):
        enc.check("a red car of a street")


def _edit_args(video, model, out, *extra):
    return [
        "edit-video", "--video", str(video), "--prompt", "a red car", "--source-prompt", "a car",
        "--model", str(model), "--out", str(out), "--frames", "3", "--size", "16", "--steps", "3",
        "--guidance", "4", "--no-progress", *extra,
    ]  # fmt: skip


def test_edit_video_command_end_to_end(latent_folder, tmp_path):
    clips = sample_clips()
    if "vtest" not in clips:
        pytest.skip("opencv-doc's vtest.avi is not installed")
    out = tmp_path / "edit"
    controlnet = ["--controlnet", str(latent_folder / "controlnet")]  # a ControlNet folder given apart
    assert main(_edit_args(clips["vtest"], latent_folder, out, "--tune-steps", "2", *controlnet)) == 0
    for name in ("edited.gif", "source.gif", "strip.png", "edit.json", "tuned.safetensors"):
        assert (out / name).is_file(), name
    report = json.loads((out / "edit.json").read_text())
    assert report["config"]["tune_steps"] == 2 and len(report["tune_losses"]) == 2
    assert set(report["edits"][0]["metrics"]) == {"warping_error", "frame_consistency", "edge_f1"}
    assert 0 <= report["edits"][0]["metrics"]["edge_f1"] <= 1
    from PIL import Image

    with Image.open(out / "strip.png") as png:  # 3 rows (source, control, edit) x 3 frames, scaled 8x
        assert png.size == (8 * (3 * 18 + 2), 8 * (3 * 18 + 2))
    # the tuned weights reproduce the tuned edit; several prompts share one tuning and inversion
    again = tmp_path / "again"
    args = _edit_args(clips["vtest"], latent_folder, again, "--tuned", str(out / "tuned.safetensors"))
    args[args.index("a red car") + 1 : args.index("a red car") + 1] = ["a blue car"]
    assert main([*args, "--format", "mp4"]) == 0
    assert read_video(again / "edited_1.mp4", 3, 16).shape == (3, 3, 16, 16)
    assert (
        main(_edit_args(clips["vtest"], latent_folder, again, "--tuned", str(out / "tuned.safetensors"))) == 0
    )

    def frames(path):
        with Image.open(path) as gif:
            return np.stack([np.asarray(gif.seek(k) or gif.convert("RGB")) for k in range(gif.n_frames)])

    assert np.array_equal(frames(out / "edited.gif"), frames(again / "edited.gif"))
    untuned = tmp_path / "untuned"
    assert main(_edit_args(clips["vtest"], latent_folder, untuned)) == 0
    assert not np.array_equal(frames(out / "edited.gif"), frames(untuned / "edited.gif"))
    per_frame = tmp_path / "per_frame"  # image editing by the same code: frame 0 alone is unchanged
    assert (
        main(
            _edit_args(clips["vtest"], latent_folder, per_frame, "--attention", "per_frame", "--no-temporal")
        )
        == 0
    )
    a, b = frames(untuned / "edited.gif"), frames(per_frame / "edited.gif")
    assert np.array_equal(a[0], b[0]) and not np.array_equal(a[1:], b[1:])


def test_edit_video_command_reports_bad_input(latent_folder, pixel_folder, tmp_path, capsys):
    clips = sample_clips()
    if "vtest" not in clips:
        pytest.skip("opencv-doc's vtest.avi is not installed")
    video = clips["vtest"]
    write_mp4(torch.rand(2, 3, 8, 8), tmp_path / "short.mp4")
    (tmp_path / "bad.mp4").write_bytes(b"\x00" * 100)
    cases = [
        (
            _edit_args(video, latent_folder, tmp_path / "o", "--control", "depth"),
            "unknown control type 'depth'",
        ),
        (_edit_args(tmp_path / "bad.mp4", latent_folder, tmp_path / "o"), "could not decode video"),
        (_edit_args(tmp_path / "short.mp4", latent_folder, tmp_path / "o"), "has 2 decodable frames"),
        (_edit_args(video, tmp_path / "nowhere", tmp_path / "o"), "model folder not found"),
        (_edit_args(video, tmp_path, tmp_path / "o"), "has no config.json"),
        (
            _edit_args(video, tmp_path, tmp_path / "o", "--controlnet", str(latent_folder / "controlnet")),
            "lacks",
        ),
        (_edit_args(tmp_path / "missing.mp4", latent_folder, tmp_path / "o"), "video file not found"),
        (
            _edit_args(video, latent_folder, tmp_path / "o", "--tuned", str(tmp_path / "t.st")),
            "tuned weights not found",
        ),
        (
            _edit_args(video, latent_folder, tmp_path / "o", "--tuned", "x", "--tune-steps", "2"),
            "cannot be combined",
        ),
        (_edit_args(video, latent_folder, tmp_path / "o", "--size", "16", "18"), "must be multiples of 4"),
        (
            _edit_args(
                video, latent_folder, tmp_path / "o", "--controlnet", str(pixel_folder / "controlnet")
            ),
            "downsamples control maps 1x but the latents are 2x",
        ),
    ]
    for args, message in cases:
        assert main(args) == 2
        assert message in capsys.readouterr().err
    args = _edit_args(video, latent_folder, tmp_path / "o")
    args[args.index("a red car")] = "a purple car"
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "['purple']" in err and "a, blue, car, green, of, photo, red, street" in err
    assert not (tmp_path / "o").exists()
