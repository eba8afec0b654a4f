"""The run kit: atomic writes, presets, run folders (resume checks, locks, names), the one
save/load convention for every backbone, and the demo contract of every package's CLI."""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import stat
from pathlib import Path

import pytest
import torch

from core.checkpoint import ModelMixin, from_pretrained
from core.config import apply_overrides, config_to_dict, preset
from core.data import atomic_write as data_atomic_write
from core.data import data_root
from core.files import atomic_write, merge_json, read_json, write_json
from core.nets import DiT, DiTConfig, MLPConfig, MLPNet, TemporalUnet, UNet, UNetConfig, UViT, UViTConfig
from core.runs import (
    DEMO_OPTIONS,
    ConfigMismatchError,
    RunLockedError,
    add_demo_arguments,
    check_demo_output,
    check_resume,
    lock_run,
    run_folder,
    seed_stats,
    settings_digest,
    validate_run_name,
)

ROOT = Path(__file__).resolve().parents[2]


def test_settings_digest_names_the_settings_not_their_order():
    a = settings_digest({"lr": 1e-3, "steps": [1, 2], "name": "x"})
    assert a == settings_digest({"name": "x", "steps": [1, 2], "lr": 1e-3})
    assert len(a) == 10 and int(a, 16) >= 0
    assert a != settings_digest({"lr": 1e-3, "steps": [1, 3], "name": "x"})
    assert a != settings_digest({"lr": 2e-3, "steps": [1, 2], "name": "x"})


def test_seed_stats_give_mean_and_sample_std():
    import numpy as np

    values = [0.61, 0.64, 0.70]
    out = seed_stats(np.asarray(values))
    assert out["values"] == values and all(type(v) is float for v in out["values"])
    assert out["mean"] == pytest.approx(np.mean(values))
    assert out["std"] == pytest.approx(np.std(values, ddof=1))
    assert seed_stats([0.5]) == {"mean": 0.5, "std": 0.0, "values": [0.5]}
    with pytest.raises(ValueError, match="at least one value"):
        seed_stats([])


# --- atomic writes --------------------------------------------------------------------------------
def test_atomic_write_replaces_whole_files_only(tmp_path):
    assert data_atomic_write is atomic_write  # one implementation, also under core.data
    target = tmp_path / "sub" / "m.json"
    write_json(target, {"a": 1})
    assert read_json(target) == {"a": 1}
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o644
    with pytest.raises(RuntimeError), atomic_write(target) as tmp:
        assert tmp.suffix == ".json" and tmp.parent == target.parent
        tmp.write_text("{half")
        raise RuntimeError("crash mid-write")
    assert read_json(target) == {"a": 1}  # the old file survives; no temporary left behind
    assert sorted(p.name for p in target.parent.iterdir()) == ["m.json"]
    assert merge_json(target, {"b": 2}) == {"a": 1, "b": 2} == read_json(target)


def test_read_json_errors_name_the_file(tmp_path):
    bad = tmp_path / "metrics.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match=str(bad)):
        read_json(bad)
    bad.write_text("[1, 2]")
    with pytest.raises(ValueError, match=f"{bad} holds a JSON list"):
        read_json(bad)
    with pytest.raises(FileNotFoundError, match="nothing.json"):
        read_json(tmp_path / "nothing.json")


def test_empty_anneal_data_means_unset(monkeypatch):
    default = Path.home() / ".cache" / "anneal"
    for value in ("", "  "):
        monkeypatch.setenv("ANNEAL_DATA", value)
        assert data_root() == default  # never the current folder
    monkeypatch.setenv("ANNEAL_DATA", "/data/x")
    assert data_root() == Path("/data/x")


# --- presets --------------------------------------------------------------------------------------
@dataclasses.dataclass
class _Cfg:
    steps: int = 10
    lr: float = 1e-3


def test_preset_copies_and_applies_overrides():
    presets = {"quick": _Cfg(), "paper": _Cfg(steps=1000)}
    a = preset(presets, "quick", steps=5, lr=None)
    assert a == _Cfg(steps=5) and presets["quick"].steps == 10  # a copy; None means "keep"
    with pytest.raises(ValueError, match="valid presets: paper, quick"):
        preset(presets, "huge")
    with pytest.raises(ValueError, match=r"unknown config field\(s\) \['stpes'\]"):
        preset(presets, "quick", stpes=3)
    with pytest.raises(ValueError, match="unknown config field"):
        apply_overrides(_Cfg(), {"x": 1})
    dit = DiTConfig.preset("B/4", image_size=32, num_classes=10)
    assert (dit.depth, dit.dim, dit.heads, dit.patch_size, dit.num_classes) == (12, 768, 12, 4, 10)
    assert UViTConfig.preset("S/2").dim == 512
    with pytest.raises(ValueError, match="unknown config field"):
        DiTConfig.preset("S/2", width=3)


# --- save / load ----------------------------------------------------------------------------------
def _backbones():
    common = dict(num_classes=3, class_dropout=0.0)
    unet = UNetConfig(
        image_size=8, in_channels=1, base_channels=8, channel_mults=(1, 2), num_res_blocks=1,
        attention_resolutions=(4,), num_heads=1, groups=4, **common,
    )  # fmt: skip
    vit = dict(image_size=8, in_channels=1, patch_size=2, dim=16, depth=2, heads=2, **common)
    image = torch.randn(2, 1, 8, 8)
    y = torch.tensor([0, 2])
    return [
        (UNet(unet), (image, torch.rand(2)), {"y": y}),
        (UViT(UViTConfig(**vit)), (image, torch.rand(2)), {"y": y}),
        (DiT(DiTConfig(**vit)), (image, torch.rand(2)), {"y": y}),
        (MLPNet(MLPConfig(dim=3, hidden=16, depth=2, **common)), (torch.randn(2, 3), torch.rand(2)),
         {"y": y}),
        (TemporalUnet(6, dim=8, dim_mults=(1, 2), cond_dim=2), (torch.randn(2, 8, 6), torch.rand(2)),
         {"cond": torch.randn(1, 8, 2)}),
    ]  # fmt: skip


@pytest.mark.parametrize("index", range(5), ids=["UNet", "UViT", "DiT", "MLPNet", "TemporalUnet"])
def test_every_backbone_round_trips_with_its_constructor_config(tmp_path, index):
    net, args, kwargs = _backbones()[index]
    cls = type(net)
    assert isinstance(net, ModelMixin)
    with torch.no_grad():
        for p in net.parameters():  # zero-initialised output layers would hide a lost weight
            p.add_(0.01 * torch.randn_like(p))
    net.eval()
    net.save_pretrained(tmp_path / "m")
    saved = json.loads((tmp_path / "m" / "config.json").read_text())
    assert saved["_class_name"] == cls.__name__
    back = cls.from_pretrained(tmp_path / "m")
    assert back.init_config == net.init_config  # dataclass configs rebuilt, tuples as tuples
    assert from_pretrained(cls, tmp_path / "m").init_config == net.init_config
    with torch.no_grad():
        torch.testing.assert_close(back(*args, **kwargs), net(*args, **kwargs), rtol=0, atol=0)
    fresh = cls.from_config({k: v for k, v in saved.items() if not k.startswith("_")})
    assert fresh.init_config == net.init_config


def test_config_of_another_shape_is_refused(tmp_path):
    net = MLPNet(MLPConfig(dim=3, hidden=16, depth=2))
    net.save_pretrained(tmp_path / "m")
    raw = json.loads((tmp_path / "m" / "config.json").read_text())
    raw["config"]["widht"] = 3
    (tmp_path / "m" / "config.json").write_text(json.dumps(raw))
    with pytest.raises(ValueError, match=r"unknown MLPConfig field\(s\) \['widht'\]"):
        MLPNet.from_pretrained(tmp_path / "m")


# --- run folders ----------------------------------------------------------------------------------
def test_run_names_stay_inside_the_runs_folder():
    assert run_folder("control", "a/b") == Path("runs/control/a/b")
    for bad in ("", "/tmp/x", "../x", "a/../../x", "~/x"):
        with pytest.raises(ValueError, match="run name"):
            validate_run_name(bad)


def test_check_resume_refuses_another_config_and_deletes_nothing(tmp_path):
    write_json(tmp_path / "config.json", {"steps": 10, "dataset": "digits", "device": "cpu"})
    (tmp_path / "train").mkdir()
    check_resume(tmp_path, {"steps": 10, "dataset": "digits", "device": "cuda"}, ignore=("device",))
    with pytest.raises(ConfigMismatchError, match=r"dataset: 'digits' -> 'fashion_mnist', steps: 10 -> 5"):
        check_resume(tmp_path, {"steps": 5, "dataset": "fashion_mnist", "device": "cpu"})
    assert (tmp_path / "train").is_dir()
    check_resume(tmp_path / "new", {"steps": 5})  # a new folder is fine
    assert config_to_dict(_Cfg()) == {"steps": 10, "lr": 1e-3}


def test_lock_run_is_exclusive(tmp_path):
    with lock_run(tmp_path / "run"):
        with pytest.raises(RunLockedError, match=f"process {os.getpid()}"), lock_run(tmp_path / "run"):
            pass
    with lock_run(tmp_path / "run"):  # released at the end of the block
        pass


# --- the demo contract ----------------------------------------------------------------------------
def test_add_demo_arguments_declares_the_contract():
    import argparse

    parser = add_demo_arguments(argparse.ArgumentParser(), "pkg", presets=["smoke", "quick"])
    assert set(DEMO_OPTIONS) <= set(parser._option_string_actions)
    args = parser.parse_args(["--out", "o", "--device", "cpu", "--seed", "3"])
    assert (args.out, args.device, args.seed, args.preset, args.no_progress) == (
        Path("o"),
        "cpu",
        3,
        "quick",
        False,
    )
    assert parser.parse_args([]).out == Path("runs/demo/pkg")


def test_check_demo_output(tmp_path):
    (tmp_path / "report.md").write_text("## pkg — x\n\n![fig](./fig.png)\n")
    with pytest.raises(ValueError, match="fig.png"):
        check_demo_output(tmp_path, "pkg")
    (tmp_path / "fig.png").write_bytes(b"png")
    with pytest.raises(FileNotFoundError, match="metrics.json"):
        check_demo_output(tmp_path, "pkg")
    write_json(tmp_path / "metrics.json", {"x": 1})
    assert check_demo_output(tmp_path, "pkg") == {"x": 1}
    with pytest.raises(ValueError, match="must start with '## other'"):
        check_demo_output(tmp_path, "other")


def _packages_with_cli() -> list[str]:
    return sorted(p.parent.name for p in ROOT.glob("*/__main__.py"))


@pytest.mark.parametrize("package", _packages_with_cli())
def test_every_package_demo_accepts_the_contract_options(package):
    has_cli = (ROOT / package / "cli.py").is_file()
    module = importlib.import_module(f"{package}.cli" if has_cli else f"{package}.__main__")
    args = module.build_parser().parse_args(["demo", "--out", "x", "--device", "cpu", "--seed", "3"])
    assert (Path(args.out), args.device, args.seed) == (Path("x"), "cpu", 3)
    defaults = module.build_parser().parse_args(["demo"])
    assert Path(defaults.out) == Path("runs/demo") / package and defaults.seed == 0
