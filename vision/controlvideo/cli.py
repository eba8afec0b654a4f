"""``python -m vision edit-video``: ControlVideo editing of a video file with a model folder."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from core.files import write_json
from core.training import resolve_device

__all__ = [
    "add_controlvideo_benchmark",
    "add_edit_video_command",
    "run_controlvideo_benchmark",
    "run_edit_video",
]

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
    p.add_argument(
        "--prompt", required=True, nargs="+", help="target prompt(s); the clip is tuned and inverted once"
    )
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
    p.add_argument(
        "--tuned", type=Path, help="tuned weights (tuned.safetensors of an earlier run) instead of tuning"
    )
    p.add_argument("--tune-query", action="store_true", help="also tune the key-frame attention's queries")
    p.add_argument("--fps", type=float, default=8.0)
    p.add_argument("--format", default="gif", choices=("gif", "mp4"), help="format of the edited clip")
    p.add_argument("--dtype", default="float32", choices=sorted(_DTYPES))
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return p


def _metrics(edited: torch.Tensor, clip: torch.Tensor) -> dict:
    from .metrics import edge_f1, frame_consistency, warping_error

    video = clip.shape[0] > 1
    return {
        "warping_error": warping_error(edited, clip) if video else None,
        "frame_consistency": frame_consistency(edited) if video else None,
        "edge_f1": edge_f1(edited, clip),
    }


def run_edit_video(args: argparse.Namespace) -> int:
    """Run ``edit-video``: writes ``edited.<format>`` (``edited_<k>.<format>`` for the k-th of
    several prompts), ``source.gif``, ``strip.png`` (rows: source, control maps, each edit; one
    column per frame), ``tuned.safetensors`` after tuning, and ``edit.json`` (settings, timings,
    and each edit's ``warping_error`` / ``frame_consistency`` / ``edge_f1`` against the source,
    see :mod:`vision.controlvideo.metrics`) into ``--out``. The clip is tuned and inverted once
    for all prompts."""
    from .controls import CONTROLS, control_maps
    from .pipeline import EditConfig, VideoEditModel, edit_source, load_tuned, prepare_source, save_tuned
    from .video import read_video, write_gif, write_strip, write_video

    if args.control not in CONTROLS:
        raise ValueError(f"unknown control type {args.control!r}; expected one of {sorted(CONTROLS)}")
    if len(args.size) not in (1, 2):
        raise ValueError(f"--size takes one or two integers (S or H W), got {args.size}")
    if args.tuned is not None and args.tune_steps:
        raise ValueError("--tuned loads tuned weights; it cannot be combined with --tune-steps")
    size = args.size[0] if len(args.size) == 1 else (args.size[0], args.size[1])
    clip = read_video(args.video, args.frames, size, stride=args.stride, start=args.start)
    device = resolve_device(args.device)
    model = VideoEditModel.load(
        args.model, device=device, dtype=_DTYPES[args.dtype], controlnet=args.controlnet
    )
    for prompt in (args.source_prompt, *args.prompt):
        model.check_prompt(prompt)
    model.check_size(*clip.shape[-2:])
    control = control_maps(clip, args.control)
    config = EditConfig(
        attention=args.attention, temporal=not args.no_temporal, tune_steps=args.tune_steps,
        lr=args.lr, tune_query=args.tune_query, steps=args.steps, guidance=args.guidance,
        control_scale=args.control_scale,
    )  # fmt: skip
    if args.tuned is not None:
        model.inflate(args.frames, config.attention, config.temporal)
        load_tuned(model, args.tuned)
    torch.manual_seed(args.seed)
    progress = not args.no_progress
    start = time.perf_counter()
    source = prepare_source(
        model, clip, control, args.source_prompt, config, seed=args.seed, progress=progress
    )
    edits = [edit_source(model, source, p, config, progress=progress) for p in args.prompt]
    seconds = time.perf_counter() - start
    out = args.out or Path("runs/vision/edit-video") / args.video.stem
    names = (
        [f"edited.{args.format}"]
        if len(edits) == 1
        else [f"edited_{k}.{args.format}" for k in range(len(edits))]
    )
    for edited, name in zip(edits, names, strict=True):
        write_video(edited, out / name, fps=args.fps)
    write_gif(clip, out / "source.gif", fps=args.fps)
    write_strip([clip, control.float().cpu(), *edits], out / "strip.png", scale=max(1, 128 // clip.shape[-1]))
    if config.tune_steps:
        save_tuned(model, out / "tuned.safetensors")
    results = [
        {"prompt": p, "file": name, "metrics": _metrics(e, clip)}
        for p, name, e in zip(args.prompt, names, edits, strict=True)
    ]
    write_json(
        out / "edit.json",
        {
            "video": str(args.video), "source_prompt": args.source_prompt, "edits": results,
            "control": args.control, "model": str(args.model), "frames": args.frames,
            "controlnet": str(args.controlnet or args.model / "controlnet"),
            "tuned": str(args.tuned) if args.tuned else None,
            "size": list(clip.shape[-2:]), "config": vars(config), "seed": args.seed,
            "source_warping_error": _metrics(clip, clip)["warping_error"],
            "tune_losses": source.tune_losses, "seconds": round(seconds, 3), "device": str(device),
        },
    )  # fmt: skip
    print(f"edited {args.frames} frames for {len(edits)} prompt(s) in {seconds:.1f} s; wrote {out}")
    for r in results:
        numbers = ", ".join(f"{k} {v:.4f}" for k, v in r["metrics"].items() if v is not None)
        print(f"{r['file']} ({r['prompt']!r}): {numbers}")
    return 0


def add_controlvideo_benchmark(sub) -> None:
    """Add ``controlvideo`` to the ``benchmark`` subcommand parser."""
    from .benchmark import PRESETS, ROWS

    p = sub.add_parser(
        "controlvideo",
        help="ControlVideo's components row by row on held-out clips (trains its small model first)",
    )
    p.add_argument("--preset", default="quick", choices=sorted(PRESETS))
    p.add_argument("--out", type=Path, help="run folder (default runs/vision/controlvideo-<preset>)")
    p.add_argument("--rows", nargs="+", help=f"subset of the rows: {' '.join(ROWS)}")
    p.add_argument("--train-steps", type=int, help="override the model's training steps")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def run_controlvideo_benchmark(args: argparse.Namespace) -> int:
    """Run ``benchmark controlvideo`` and print its table."""
    import dataclasses

    from .benchmark import METRICS, bench_config, run_benchmark

    config = bench_config(args.preset, rows=tuple(args.rows) if args.rows else None, seed=args.seed)
    if args.train_steps is not None:
        config = dataclasses.replace(config, model=dataclasses.replace(config.model, steps=args.train_steps))
    out = args.out or Path(f"runs/vision/controlvideo-{args.preset}")
    metrics = run_benchmark(config, out, device=args.device, progress=not args.no_progress)
    print(f"{'row':<20}" + "".join(f"{k:>22}" for k in METRICS))
    for name, row in {**metrics["reference"], **metrics["rows"]}.items():
        print(f"{name:<20}" + "".join(f"{row[k]['mean']:>13.4f} ± {row[k]['std']:<6.4f}" for k in METRICS))
    for k, v in metrics["targets"].items():
        print(f"{k}: {v}")
    print(
        f"wall time {metrics['wall_seconds']:.0f} s (training {metrics['train_seconds']:.0f} s); wrote {out}"
    )
    return 0
