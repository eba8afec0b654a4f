"""save_pretrained / from_pretrained: round trips, the mixin's recorded config, and clear errors."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from core.checkpoint import ModelMixin, from_pretrained, load_weights, save_pretrained


class MLP(ModelMixin):
    def __init__(self, dim: int, hidden: int = 8, act: str = "tanh", depth: int = 1):
        super().__init__()
        layers: list[nn.Module] = [nn.Linear(dim, hidden), nn.Tanh() if act == "tanh" else nn.SiLU()]
        for _ in range(depth - 1):
            layers += [nn.Linear(hidden, hidden), nn.Tanh()]
        self.net = nn.Sequential(*layers, nn.Linear(hidden, dim))
        self.register_buffer("scale", torch.tensor(2.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x) * self.scale


class WideMLP(MLP):
    def __init__(self, dim: int, widen: int = 2, **kwargs):
        super().__init__(dim, hidden=8 * widen, **kwargs)


class Other(ModelMixin):
    def __init__(self, dim: int = 3):
        super().__init__()
        self.lin = nn.Linear(dim, dim)


class Tied(ModelMixin):
    def __init__(self, vocab: int = 5, dim: int = 4):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.head = nn.Linear(dim, vocab, bias=False)
        self.head.weight = self.embed.weight


def test_round_trip_gives_identical_outputs(tmp_path):
    model = MLP(3, hidden=6, act="silu", depth=2)
    assert model.init_config == {"dim": 3, "hidden": 6, "act": "silu", "depth": 2}
    path = model.save_pretrained(tmp_path / "mlp")
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "model.safetensors"]
    config = json.loads((path / "config.json").read_text())
    assert config["_class_name"] == "MLP" and config["hidden"] == 6

    loaded = MLP.from_pretrained(path, map_location="cpu")
    assert not loaded.training
    x = torch.randn(5, 3)
    torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)

    model.save_pretrained(path)  # overwriting an existing folder leaves no temporary files
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlp"]


def test_subclass_records_outermost_kwargs_and_tied_weights(tmp_path):
    wide = WideMLP(2, widen=3, act="silu")
    assert wide.init_config == {"dim": 2, "widen": 3, "act": "silu"}
    loaded = WideMLP.from_pretrained(wide.save_pretrained(tmp_path / "wide"))
    x = torch.randn(4, 2)
    torch.testing.assert_close(loaded(x), wide(x))

    tied = Tied()
    back = Tied.from_pretrained(tied.save_pretrained(tmp_path / "tied"))
    assert back.head.weight is back.embed.weight
    torch.testing.assert_close(back.embed.weight, tied.embed.weight)


def test_plain_module_with_explicit_config(tmp_path):
    lin = nn.Linear(3, 4)
    save_pretrained(lin, tmp_path / "lin", {"in_features": 3, "out_features": 4})
    back = from_pretrained(nn.Linear, tmp_path / "lin")
    torch.testing.assert_close(back.weight, lin.weight)
    with pytest.raises(TypeError, match="not JSON-serialisable"):
        save_pretrained(lin, tmp_path / "bad", {"dtype": torch.float32})


def test_missing_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        MLP.from_pretrained(tmp_path / "nowhere")
    path = MLP(3).save_pretrained(tmp_path / "m")
    (path / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        MLP.from_pretrained(path)
    (path / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="config.json"):
        MLP.from_pretrained(path)


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupted_weights_raise_value_error(tmp_path, damage):
    path = MLP(3).save_pretrained(tmp_path / "m")
    weights = path / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(b"\x00not a safetensors file" * 4 if damage == "garbage" else data[: len(data) // 2])
    with pytest.raises(ValueError, match="model.safetensors"):
        MLP.from_pretrained(path)


def test_corrupted_config_raises_value_error(tmp_path):
    path = MLP(3).save_pretrained(tmp_path / "m")
    (path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="config.json"):
        MLP.from_pretrained(path)


def test_other_class_checkpoint_names_both_classes(tmp_path):
    path = Other().save_pretrained(tmp_path / "other")
    with pytest.raises(ValueError, match="Other.*MLP"):
        MLP.from_pretrained(path)


def test_missing_unexpected_and_mismatched_keys(tmp_path):
    path = MLP(3, depth=2).save_pretrained(tmp_path / "m")
    config = json.loads((path / "config.json").read_text())

    config["depth"] = 1  # the weights now hold an extra layer
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"unexpected keys \['net.4.bias', 'net.4.weight'\]"):
        MLP.from_pretrained(path)

    config["depth"] = 3  # the weights now lack a layer
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="missing keys"):
        MLP.from_pretrained(path)

    with pytest.raises(ValueError, match="size mismatch"):
        load_weights(MLP(3, hidden=5, depth=2), path / "model.safetensors")
