"""Prompt encoders: a small word-level text encoder, and Stable Diffusion's CLIP text encoder.

Both give ``encode(prompts) -> (N, L, D)`` hidden states for the UNet's cross-attention and
check prompts first with ``check(prompt)``, which raises a ValueError naming the words the
encoder does not know (and, for a small vocabulary, the words it does know).

- :class:`WordTextEncoder` (a :class:`core.ModelMixin`, saved with ``save_pretrained``): a
  fixed word vocabulary (colours, styles, textures ...), word + position embeddings and a small
  Transformer encoder; the empty prompt (all padding) is the null prompt of classifier-free
  guidance.
- :class:`ClipTextEncoder`: a diffusers pipeline's ``text_encoder/`` + ``tokenizer/`` (CLIP,
  loaded with the ``transformers`` package, which is then required).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch
from torch import Tensor, nn

from core.checkpoint import ModelMixin

__all__ = ["ClipTextEncoder", "WordTextEncoder", "load_text_encoder", "words"]

_WORD = re.compile(r"[a-z0-9]+(?:[-'][a-z0-9]+)*")
_LIST_LIMIT = 200


def words(prompt: str) -> list[str]:
    """The lower-cased words of a prompt (punctuation dropped)."""
    if not isinstance(prompt, str):
        raise ValueError(f"a prompt must be a string, got {type(prompt).__name__}")
    return _WORD.findall(prompt.lower())


def _unknown_error(unknown: list[str], prompt: str, known: list[str] | None) -> ValueError:
    if known is not None and len(known) <= _LIST_LIMIT:
        what = f"it knows {len(known)} words: {', '.join(sorted(known))}"
    else:
        what = "use words of its vocabulary"
    return ValueError(f"prompt {prompt!r} has words the text encoder does not know: {unknown}; {what}")


class WordTextEncoder(ModelMixin):
    """Word-level prompt encoder: (N prompts) -> (N, max_length, dim).

    Args:
        vocab: the known words (lower case, unique); id 0 is padding, word i has id i + 1.
        dim: hidden size (the UNet's ``cross_attention_dim``).
        max_length: tokens per prompt; longer prompts are an error.
        layers, heads: the Transformer encoder's depth and attention heads.
    """

    def __init__(self, vocab: list[str], dim: int = 32, max_length: int = 8, layers: int = 1, heads: int = 2):
        super().__init__()
        vocab = [str(w) for w in vocab]
        if not vocab or len(set(vocab)) != len(vocab) or any(words(w) != [w] for w in vocab):
            raise ValueError(f"vocab must be unique lower-case words, got {vocab!r}")
        self.vocab = vocab
        self.index = {w: i + 1 for i, w in enumerate(vocab)}
        self.max_length = int(max_length)
        self.tokens = nn.Embedding(len(vocab) + 1, dim, padding_idx=0)
        self.positions = nn.Parameter(torch.randn(self.max_length, dim) * 0.02)
        layer = nn.TransformerEncoderLayer(
            dim, heads, 2 * dim, dropout=0.0, batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)

    @property
    def dim(self) -> int:
        return self.tokens.embedding_dim

    def check(self, prompt: str) -> list[str]:
        """The prompt's words; ValueError naming unknown words (and the known ones) or a too long prompt."""
        ws = words(prompt)
        unknown = [w for w in ws if w not in self.index]
        if unknown:
            raise _unknown_error(unknown, prompt, self.vocab)
        if len(ws) > self.max_length:
            raise ValueError(f"prompt {prompt!r} has {len(ws)} words; at most {self.max_length} fit")
        return ws

    def tokenize(self, prompts: list[str]) -> Tensor:
        """Token ids (N, max_length), 0-padded."""
        ids = torch.zeros(len(prompts), self.max_length, dtype=torch.long)
        for i, p in enumerate(prompts):
            toks = [self.index[w] for w in self.check(p)]
            ids[i, : len(toks)] = torch.tensor(toks, dtype=torch.long)
        return ids

    def forward(self, ids: Tensor) -> Tensor:
        """Hidden states (N, max_length, dim) of token ids (N, max_length)."""
        h = self.tokens(ids) + self.positions
        return self.norm(self.encoder(h))

    def encode(self, prompts: list[str]) -> Tensor:
        """Hidden states (N, max_length, dim) of the prompts, on the encoder's device and dtype."""
        ids = self.tokenize(list(prompts)).to(self.tokens.weight.device)
        return self(ids)


class ClipTextEncoder(nn.Module):
    """Stable Diffusion's text encoder: a ``transformers`` CLIP text model and its tokenizer.

    ``encode(prompts)`` returns the last hidden states (N, 77, 768 for SD 1.5); ``check`` rejects
    words that the tokenizer maps to its unknown token.
    """

    def __init__(self, model: nn.Module, tokenizer) -> None:
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer

    def check(self, prompt: str) -> list[str]:
        """The prompt's words; ValueError naming words the tokenizer maps to its unknown token."""
        ws = words(prompt)
        unk = self.tokenizer.unk_token_id
        unknown = [
            w for w in ws if unk is not None and unk in self.tokenizer(w, add_special_tokens=False).input_ids
        ]
        if unknown:
            vocab = self.tokenizer.get_vocab()
            known = [t.removesuffix("</w>") for t in vocab if t.endswith("</w>")]
            raise _unknown_error(unknown, prompt, known)
        return ws

    def encode(self, prompts: list[str]) -> Tensor:
        """Last hidden states (N, model_max_length, hidden size) of the prompts."""
        for p in prompts:
            self.check(p)
        tok = self.tokenizer(
            list(prompts), padding="max_length", max_length=self.tokenizer.model_max_length,
            truncation=True, return_tensors="pt",
        )  # fmt: skip
        device = next(self.model.parameters()).device
        return self.model(tok.input_ids.to(device))[0]


def load_text_encoder(folder: str | os.PathLike) -> WordTextEncoder | ClipTextEncoder:
    """The text encoder of a model folder: ``folder/text_encoder`` (a :class:`WordTextEncoder`
    saved with ``save_pretrained``, or a CLIP text model beside ``folder/tokenizer``)."""
    folder = Path(folder)
    config = folder / "text_encoder" / "config.json"
    if not config.is_file():
        raise FileNotFoundError(f"model folder {folder} has no text encoder: {config} is missing")
    import json

    name = json.loads(config.read_text()).get("_class_name")
    if name == WordTextEncoder.__name__:
        return WordTextEncoder.from_pretrained(folder / "text_encoder").eval()
    try:
        from transformers import AutoTokenizer, CLIPTextModel
    except ImportError:
        raise ValueError(
            f"{config} is a transformers text encoder; install the transformers package to load it"
        ) from None
    if not (folder / "tokenizer").is_dir():
        raise FileNotFoundError(f"model folder {folder} has a CLIP text encoder but no tokenizer/ folder")
    model = CLIPTextModel.from_pretrained(folder / "text_encoder").eval()
    return ClipTextEncoder(model, AutoTokenizer.from_pretrained(folder / "tokenizer"))
