"""Key-frame / cross-frame / temporal attention on tiny random diffusers models saved to disk and
loaded back, checked against diffusers' own attention processor."""

import copy

import pytest
import torch

diffusers = pytest.importorskip("diffusers", reason="diffusers not installed")
from diffusers.models.attention_processor import AttnProcessor2_0  # noqa: E402

from vision.controlvideo.attention import (  # noqa: E402
    VideoAttnProcessor,
    VideoContext,
    inflate,
    set_num_frames,
    trainable_parameters,
)

torch.set_num_threads(1)
F = 3


def _unet():
    return diffusers.UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(8, 16),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=16, attention_head_dim=4, norm_num_groups=4,
    )  # fmt: skip


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("tiny")
    unet = _unet()
    unet.save_pretrained(root / "unet")
    controlnet = diffusers.ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(8,))
    with torch.no_grad():  # a trained ControlNet: its zero-initialised output convolutions are not zero
        for p in [
            *controlnet.controlnet_down_blocks.parameters(),
            *controlnet.controlnet_mid_block.parameters(),
        ]:
            p.normal_(0.0, 0.1)
    controlnet.save_pretrained(root / "controlnet")
    return root


def _load(root, name="unet"):
    cls = diffusers.UNet2DConditionModel if name == "unet" else diffusers.ControlNetModel
    return cls.from_pretrained(root / name).eval()


def _inputs(videos=2, same=False, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(videos, 1 if same else F, 4, 8, 8, generator=g).expand(videos, F, 4, 8, 8)
    ctx = torch.randn(videos, 1, 5, 16, generator=g).expand(videos, F, 5, 16)
    t = torch.full((videos * F,), 321)
    return x.reshape(-1, 4, 8, 8), t, ctx.reshape(-1, 5, 16)


@pytest.mark.parametrize("mode", ["keyframe", "full"])
def test_identical_frames_give_per_frame_attention(folders, mode):
    ref, video = _load(folders), _load(folders)
    inflate(video, F, attention=mode, temporal=True)
    x, t, ctx = _inputs(same=True)
    with torch.no_grad():
        expected, got = ref(x, t, ctx).sample, video(x, t, ctx).sample
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_frame_zero_is_unchanged_and_other_frames_change(folders):
    ref, video = _load(folders), _load(folders)
    inflate(video, F, attention="keyframe", temporal=True)
    x, t, ctx = _inputs(same=False)
    with torch.no_grad():
        expected, got = ref(x, t, ctx).sample, video(x, t, ctx).sample
    first = torch.arange(0, 2 * F, F)
    torch.testing.assert_close(got[first], expected[first], atol=1e-6, rtol=1e-6)
    assert float((got - expected).abs().max()) > 1e-3


def test_controlnet_is_inflated_the_same_way(folders):
    ref, video = _load(folders, "controlnet"), _load(folders, "controlnet")
    inflate(video, F)
    x, t, ctx = _inputs(same=False)
    control = torch.rand(2 * F, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        d_ref, m_ref = ref(x, t, ctx, controlnet_cond=control, return_dict=False)
        d_vid, m_vid = video(x, t, ctx, controlnet_cond=control, return_dict=False)
    torch.testing.assert_close(m_vid[::F], m_ref[::F], atol=1e-6, rtol=1e-6)
    assert float((m_vid - m_ref).abs().max()) > 1e-4


@pytest.mark.parametrize("mode", ["keyframe", "full"])
def test_processor_equals_cross_attention_to_the_key_tokens(folders, mode):
    """Frame f's key-frame attention = diffusers' attention of frame f's tokens to frame 0's
    tokens; fully cross-frame = to all frames' tokens concatenated."""
    attn = _load(folders).down_blocks[0].attentions[0].transformer_blocks[0].attn1
    h = torch.randn(2 * F, 16, 8, generator=torch.Generator().manual_seed(3))
    video = VideoAttnProcessor(VideoContext(F), mode)
    got = video(attn, h)
    plain = AttnProcessor2_0()
    clips = h.view(2, F, 16, 8)
    for v in range(2):
        keys = clips[v, :1].reshape(1, 16, 8) if mode == "keyframe" else clips[v].reshape(1, F * 16, 8)
        for f in range(F):
            want = plain(attn, clips[v, f : f + 1], encoder_hidden_states=keys)
            torch.testing.assert_close(got[v * F + f : v * F + f + 1], want, atol=1e-6, rtol=1e-6)


def test_temporal_attention_starts_as_identity_and_mixes_frames(folders):
    unet = _load(folders)
    inflate(unet, F)
    block = unet.down_blocks[0].attentions[0].transformer_blocks[0]
    temp = block.attn_temp
    for name in ("to_q", "to_k", "to_v"):
        assert torch.equal(getattr(temp.attn, name).weight, getattr(block.attn1, name).weight)
    assert not temp.proj_out.weight.any() and not temp.proj_out.bias.any()
    h = torch.randn(2 * F, 16, 8, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        assert torch.equal(temp(h), h)
        torch.nn.init.normal_(temp.proj_out.weight)
        out = temp(h)
        h2 = h.clone()
        h2[1] += torch.randn(16, 8)  # change frame 1 of video 0 only
        out2 = temp(h2)
    assert float((out2[0] - out[0]).abs().max()) > 1e-3  # frame 0 sees frame 1 at the same position
    torch.testing.assert_close(out2[F:], out[F:])  # the other video is untouched
    # a spatial position only attends along time: changing one token moves no other position
    h3 = h.clone()
    h3[1, 5] += torch.randn(8)
    with torch.no_grad():
        out3 = temp(h3)
    moved = (out3 - out).abs().amax(dim=(0, 2)) > 1e-6
    assert moved.tolist() == [i == 5 for i in range(16)]


def test_only_selected_parameters_are_trainable(folders):
    unet, cn = _load(folders), _load(folders, "controlnet")
    inflate(unet, F)
    inflate(cn, F)
    selected = trainable_parameters([unet, cn])
    names = [n for m in (unet, cn) for n, p in m.named_parameters() if p.requires_grad]
    assert len(names) == len(selected) > 0
    assert all(".attn1.to_out." in n or ".attn_temp." in n for n in names)
    assert any(".attn_temp." in n for n in names) and any(".attn1.to_out." in n for n in names)
    total = sum(p.numel() for m in (unet, cn) for p in m.parameters())
    assert sum(p.numel() for p in selected) < total / 5
    with_q = trainable_parameters([unet, cn], query=True)
    q_names = {n for m in (unet, cn) for n, p in m.named_parameters() if p.requires_grad}
    assert len(with_q) > len(selected) and any(".attn1.to_q." in n for n in q_names)
    assert not any(".attn2." in n or "conv" in n for n in q_names)


def test_bad_use_is_refused(folders):
    unet = _load(folders)
    with pytest.raises(ValueError, match="unknown attention mode"):
        inflate(unet, F, attention="sparse")
    with pytest.raises(ValueError, match="num_frames must be"):
        inflate(unet, 0)
    with pytest.raises(ValueError, match="not inflated"):
        set_num_frames(unet, 4)
    with pytest.raises(ValueError, match="not inflated"):
        trainable_parameters([unet])
    inflate(unet, F)
    with pytest.raises(ValueError, match="inflated already"):
        inflate(unet, F)
    with pytest.raises(ValueError, match="no diffusers BasicTransformerBlock"):
        inflate(torch.nn.Linear(2, 2), F)
    x, t, ctx = _inputs(videos=1)
    set_num_frames(unet, 2)
    with torch.no_grad(), pytest.raises(ValueError, match="not a whole number of videos"):
        unet(x, t, ctx)
    set_num_frames(unet, F)
    with torch.no_grad():
        copy.deepcopy(unet)(x, t, ctx)
