"""``python -m vision edit-video``: ControlVideo editing of a video file with a model folder."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from core.files import write_json
from core.training import resolve_device

__all__ = ["add_edit_video_command", "run_edit_video"]

_DTYPES = {
    "float32": torch.float32,
    "float64": torch.float64,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}


def add_edit_video_command(sub) -> argparse.ArgumentParser:
    """Declare ``edit-video`` on the subparsers ``sub`` of ``python -m vision``."""
    from .attention import ATTENTION_MODES
    from .controls import CONTROLS

    p = sub.add_parser(
        "edit-video",
        help="edit a clip toward a prompt (ControlVideo: key-frame + temporal attention, ControlNet)",
    )
    p.add_argument("--video", type=Path, required=True, help="video file (any format OpenCV decodes)")
    p.add_argument("--prompt", required=True, help="target prompt")
    p.add_argument(
        "--source-prompt", default="", help="prompt describing the source clip (inversion, tuning)"
    )
    p.add_argument("--control", default="canny", help=f"control map type: {' | '.join(sorted(CONTROLS))}")
    p.add_argument(
        "--model",
        type=Path,
        required=True,
        help="model folder: unet/ controlnet/ text_encoder/ scheduler/ [vae/]",
    )
    p.add_argument("--controlnet", type=Path, help="ControlNet folder (default: <model>/controlnet)")
    p.add_argument("--out", type=Path, help="output folder (default runs/vision/edit-video/<video name>)")
    p.add_argument("--frames", type=int, default=8, help="frames to edit (paper: 8)")
    p.add_argument("--size", type=int, nargs="+", default=[64], help="frame size: S or H W (pixels)")
    p.add_argument("--stride", type=int, default=1, help="take every stride-th frame")
    p.add_argument("--start", type=int, default=0, help="first frame")
    p.add_argument("--steps", type=int, default=50, help="DDIM steps of inversion and sampling (paper: 50)")
    p.add_argument("--guidance", type=float, default=12.0, help="classifier-free guidance scale (paper: 12)")
    p.add_argument("--control-scale", type=float, default=1.0, help="ControlNet residual scale")
    p.add_argument(
        "--attention", default="keyframe", choices=ATTENTION_MODES, help="spatial self-attention mode"
    )
    p.add_argument("--no-temporal", action="store_true", help="no temporal attention")
    p.add_argument("--tune-steps", type=int, default=0, help="one-shot tuning steps (paper: 80-300)")
    p.add_argument("--lr", type=float, default=3e-5, help="tuning learning rate (paper: 3e-5)")
    p.add_argument("--tune-query", action="store_true", help="also tune the key-frame attention's queries")
    p.add_argument("--fps", type=float, default=8.0)
    p.add_argument("--format", default="gif", choices=("gif", "mp4"), help="format of the edited clip")
    p.add_argument("--dtype", default="float32", choices=sorted(_DTYPES))
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return p


def run_edit_video(args: argparse.Namespace) -> int:
    """Run ``edit-video``: writes ``edited.<format>``, ``source.gif`` and ``strip.png`` (source,
    control maps, edit; one column per frame) and ``edit.json`` (settings, timings, and the
    edit's ``warping_error`` / ``frame_consistency`` / ``edge_f1`` against the source, see
    :mod:`vision.controlvideo.metrics`) into ``--out``."""
    from .controls import CONTROLS, control_maps
    from .metrics import edge_f1, frame_consistency, warping_error
    from .pipeline import EditConfig, VideoEditModel, edit_clip
    from .video import read_video, write_gif, write_strip, write_video

    if args.control not in CONTROLS:
        raise ValueError(f"unknown control type {args.control!r}; expected one of {sorted(CONTROLS)}")
    if len(args.size) not in (1, 2):
        raise ValueError(f"--size takes one or two integers (S or H W), got {args.size}")
    size = args.size[0] if len(args.size) == 1 else (args.size[0], args.size[1])
    clip = read_video(args.video, args.frames, size, stride=args.stride, start=args.start)
    device = resolve_device(args.device)
    model = VideoEditModel.load(
        args.model, device=device, dtype=_DTYPES[args.dtype], controlnet=args.controlnet
    )
    for prompt in (args.source_prompt, args.prompt):
        model.check_prompt(prompt)
    control = control_maps(clip, args.control)
    config = EditConfig(
        attention=args.attention, temporal=not args.no_temporal, tune_steps=args.tune_steps,
        lr=args.lr, tune_query=args.tune_query, steps=args.steps, guidance=args.guidance,
        control_scale=args.control_scale,
    )  # fmt: skip
    torch.manual_seed(args.seed)
    start = time.perf_counter()
    result = edit_clip(
        model, clip, control, args.source_prompt, args.prompt, config, seed=args.seed,
        progress=not args.no_progress,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    out = args.out or Path("runs/vision/edit-video") / args.video.stem
    edited = result["edited"]
    metrics = {
        "warping_error": warping_error(edited, clip) if args.frames > 1 else None,
        "frame_consistency": frame_consistency(edited) if args.frames > 1 else None,
        "edge_f1": edge_f1(edited, clip),
        "source_warping_error": warping_error(clip, clip) if args.frames > 1 else None,
    }
    write_video(edited, out / f"edited.{args.format}", fps=args.fps)
    write_gif(clip, out / "source.gif", fps=args.fps)
    write_strip([clip, control.float().cpu(), edited], out / "strip.png", scale=max(1, 128 // clip.shape[-1]))
    write_json(
        out / "edit.json",
        {
            "video": str(args.video), "prompt": args.prompt, "source_prompt": args.source_prompt,
            "control": args.control, "model": str(args.model), "frames": args.frames,
            "controlnet": str(args.controlnet or args.model / "controlnet"),
            "size": list(clip.shape[-2:]), "config": vars(config), "seed": args.seed, "metrics": metrics,
            "tune_losses": result["tune_losses"], "seconds": round(seconds, 3),
            "device": str(device),
        },
    )  # fmt: skip
    edited_path = out / f"edited.{args.format}"
    print(f"edited {args.frames} frames in {seconds:.1f} s; wrote {edited_path} and {out / 'strip.png'}")
    print(", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if v is not None))
    return 0
