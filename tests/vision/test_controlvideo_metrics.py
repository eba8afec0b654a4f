"""Video metrics on synthetic clips with known answers: a translated texture (flow known
exactly), still and independent frames, shifted and blank edge maps."""

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from vision.controlvideo.metrics import edge_f1, frame_consistency, optical_flow, warp, warping_error

torch.set_num_threads(1)


def _texture(size=80, seed=0):
    rng = np.random.default_rng(seed)
    img = np.stack([gaussian_filter(rng.standard_normal((size, size)), 2.0) for _ in range(3)])
    img = (img - img.min()) / (img.max() - img.min())
    return torch.from_numpy(img).float()


def _translated(frames=4, shift=1, size=32):
    """Frame i is a window moved right by i * shift pixels: the content moves left."""
    big = _texture()
    return torch.stack(
        [big[:, 20 : 20 + size, 20 + i * shift : 20 + i * shift + size] for i in range(frames)]
    )


def test_warp_along_a_known_flow_is_the_shift():
    clip = _translated(frames=2, shift=2)
    flow = np.zeros((32, 32, 2), np.float32)
    flow[..., 0] = 2.0  # frame 1 at p = frame 0 at p + (2, 0)
    warped = warp(clip[0], flow)
    torch.testing.assert_close(warped[:, :, :-2], clip[1][:, :, :-2])
    est = optical_flow(clip[1], clip[0])
    inner = est[6:-6, 6:-6]
    assert abs(float(inner[..., 0].mean()) - 2.0) < 0.1 and abs(float(inner[..., 1].mean())) < 0.1


def test_translation_has_near_zero_warping_error_and_flicker_does_not():
    clip = _translated(frames=4, shift=1)
    raw = float((clip[1:] - clip[:-1]).abs().mean())
    err = warping_error(clip, clip)
    assert err < 0.1 * raw, (err, raw)
    flicker = (clip + torch.tensor([0.0, 0.15, 0.0, 0.15]).view(4, 1, 1, 1)).clamp(0, 1)
    assert warping_error(flicker, clip) > 0.1
    # a per-frame edit that ignores the motion (each frame the same still image) is penalised too
    still = clip[:1].expand(4, -1, -1, -1)
    assert warping_error(still, clip) > 5 * err


def test_frame_consistency_of_still_and_independent_frames():
    still = _texture()[:, :16, :16].expand(3, 3, 16, 16)
    assert frame_consistency(still) == pytest.approx(1.0, abs=1e-6)
    noise = torch.rand(50, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    assert abs(frame_consistency(noise)) < 0.05
    assert frame_consistency(noise, features=lambda c: torch.ones(c.shape[0], 4)) == pytest.approx(1.0)


def test_edge_f1_of_identical_shifted_and_blank_clips():
    img = torch.zeros(2, 3, 32, 32)
    img[:, :, 8:24, 8:24] = 1.0
    shifted = torch.roll(img, 1, dims=3)
    assert edge_f1(img, img) == pytest.approx(1.0)
    assert edge_f1(shifted, img, tolerance=1) == pytest.approx(1.0)
    assert edge_f1(shifted, img, tolerance=0) < 0.7
    assert edge_f1(torch.zeros_like(img), img) == 0.0
    with pytest.raises(ValueError, match="differ in shape"):
        edge_f1(img[:1], img)
    with pytest.raises(ValueError, match="F >= 2"):
        warping_error(img[:1], img[:1])
