"""Colour attributes of the small text-to-image model: the prompts, the recolouring that makes
its training pairs, and the attribute classifier that judges an edit.

An attribute is a colour filter: ``tint(x, c) = clip(lum(x) * c / lum(c), 0, 1)`` keeps every
pixel's luminance (up to clipping in the highlights), so edges and structure survive, and sets
its chromaticity to the colour's. The untinted image is the attribute ``photo``.
Prompts are ``"a photo"`` (source) and ``"a <colour> photo"`` (edits).

:class:`AttributeClassifier` is a nearest-centroid classifier of a frame's mean chromaticity
(r, g, b) / (r + g + b) over all attributes, ``photo`` included (an unedited frame counts as
wrong), fitted on training images. It is a colour statistic, not a learned image classifier.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .controls import luminance

__all__ = [
    "COLOURS",
    "SOURCE_PROMPT",
    "AttributeClassifier",
    "attribute_prompt",
    "attributes",
    "tint",
]

#: Filter colours (RGB in [0, 1]) by name.
COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (1.0, 0.25, 0.2),
    "green": (0.3, 1.0, 0.3),
    "blue": (0.3, 0.5, 1.0),
    "yellow": (1.0, 0.9, 0.2),
    "purple": (0.75, 0.3, 1.0),
}
SOURCE_PROMPT = "a photo"


def attributes(colours: tuple[str, ...] | list[str] = tuple(COLOURS)) -> list[str]:
    """The attribute names: ``photo`` (untinted) followed by the colours."""
    unknown = [c for c in colours if c not in COLOURS]
    if unknown:
        raise ValueError(f"unknown colours {unknown}; known: {sorted(COLOURS)}")
    return ["photo", *colours]


def attribute_prompt(attribute: str) -> str:
    """``"a photo"`` for ``photo``, ``"a <colour> photo"`` for a colour."""
    if attribute == "photo":
        return SOURCE_PROMPT
    attributes([attribute])
    return f"a {attribute} photo"


def tint(x: Tensor, colour: str | Tensor) -> Tensor:
    """Recolour images (B, 3, H, W) in [0, 1] with one colour (a name) or per-image colours
    (B, 3): luminance kept, chromaticity set to the colour's."""
    if isinstance(colour, str):
        attributes([colour])
        c = torch.tensor(COLOURS[colour], dtype=x.dtype, device=x.device).expand(x.shape[0], 3)
    else:
        c = colour.to(x)
        if c.shape != (x.shape[0], 3):
            raise ValueError(f"colours must have shape ({x.shape[0]}, 3), got {tuple(c.shape)}")
    gain = c / luminance(c[:, :, None, None]).flatten(1)
    return (luminance(x) * gain[:, :, None, None]).clamp(0, 1)


def _chromaticity(frames: Tensor) -> Tensor:
    """(N, 3, H, W) in [0, 1] -> (N, 3) chromaticity of the mean colour."""
    if frames.dim() != 4 or frames.shape[1] != 3:
        raise ValueError(f"frames must have shape (N, 3, H, W), got {tuple(frames.shape)}")
    m = frames.float().mean((2, 3))
    return m / m.sum(1, keepdim=True).clamp_min(1e-6)


class AttributeClassifier:
    """Nearest centroid of the mean chromaticity: ``predict(frames (N, 3, H, W)) -> names``."""

    def __init__(self, names: list[str], centroids: Tensor) -> None:
        if centroids.shape != (len(names), 3):
            raise ValueError(f"centroids must have shape ({len(names)}, 3), got {tuple(centroids.shape)}")
        self.names = list(names)
        self.centroids = centroids.float()

    @classmethod
    def fit(
        cls, images: Tensor, colours: tuple[str, ...] | list[str] = tuple(COLOURS)
    ) -> AttributeClassifier:
        """Centroids from untinted images (N, 3, H, W) in [0, 1] and their tinted copies."""
        names = attributes(colours)
        cents = [_chromaticity(images).mean(0)] + [_chromaticity(tint(images, c)).mean(0) for c in colours]
        return cls(names, torch.stack(cents))

    def predict(self, frames: Tensor) -> list[str]:
        """The attribute of each frame (N, 3, H, W) in [0, 1]."""
        d = torch.cdist(_chromaticity(frames), self.centroids)
        return [self.names[i] for i in d.argmin(1).tolist()]

    def accuracy(self, frames: Tensor, attribute: str) -> float:
        """Fraction of frames classified as ``attribute``."""
        if attribute not in self.names:
            raise ValueError(f"unknown attribute {attribute!r}; known: {self.names}")
        pred = self.predict(frames)
        return sum(p == attribute for p in pred) / len(pred)

    def state(self) -> dict:
        """JSON-friendly state (names and centroids)."""
        return {"names": self.names, "centroids": self.centroids.tolist()}

    @classmethod
    def from_state(cls, state: dict) -> AttributeClassifier:
        return cls(list(state["names"]), torch.tensor(state["centroids"]))
