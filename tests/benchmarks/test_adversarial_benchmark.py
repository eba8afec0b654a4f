"""The adversarial stage of the classic-families benchmark at a tiny size, and its paper preset."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from core.training import Trainer, TrainerConfig

REPO = Path(__file__).resolve().parents[2]


def _module():
    spec = importlib.util.spec_from_file_location(
        "adversarial_stage", REPO / "benchmarks/classic/adversarial.py"
    )
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def test_smoke_stage_runs_caches_and_reports(tmp_path, monkeypatch):
    mod = _module()
    # The Fashion-MNIST feature classifier behind fid_fmnist is trained and tested with the image
    # pipeline; here a cheap stand-in keeps the stage's own logic under test.
    monkeypatch.setattr(
        mod, "sample_metrics", lambda ds, x: {"fid_fmnist": float(x.std()), "precision": 0.5, "recall": 0.4}
    )
    out = tmp_path / "adv"
    result = mod.run("smoke", out, "cpu")
    assert set(result) == {"claims", "metrics", "table_rows"}
    assert set(result["claims"]) == {"3", "4", "5"}
    assert all(isinstance(v["holds"], bool) for v in result["claims"].values())
    assert result["claims"]["3"]["holds"] is True  # exact: independent of training
    c4, c5 = result["claims"]["4"], result["claims"]["5"]
    if c4["holds"]:
        assert c4["ring_modes"]["clc_gan"] >= c4["ring_modes"]["clc_base"]
        assert c4["fid_fmnist"]["clc_gan"] < c4["fid_fmnist"]["clc_base"]
    assert c5["holds"] == (c5["test_error"]["triple_gan"] < c5["test_error"]["supervised"])
    assert [r["model"] for r in result["table_rows"]] == ["gan", "wgan_gp", "clc_gan"]
    assert [r["family"] for r in result["table_rows"]] == ["GAN", "WGAN-GP", "CLC-GAN"]
    for row in result["table_rows"]:
        assert set(row) == {
            "family",
            "model",
            "fid_fmnist",
            "precision",
            "recall",
            "sample_seconds_per_image",
            "grid",
        }
        assert row["sample_seconds_per_image"] > 0 and math.isfinite(row["fid_fmnist"])
        assert Path(row["grid"]).is_file()
    m = result["metrics"]
    assert 0 <= m["ring_modes_clc_base"] <= 8 and 0 <= m["triple_gan_test_error"] <= 1
    assert m["triple_gan_labels"] == 20
    for fig in ("dirac/dirac_phase.png", "ring/ring_convergence.png", "fmnist/fmnist_convergence.png",
                "fmnist/samples_clc_gan.png", "triple/samples_triple_gan.png"):  # fmt: skip
        assert (out / fig).stat().st_size > 1000, fig
    assert json.loads((out / "result.json").read_text())["claims"] == result["claims"]
    # A rerun reads every stage from its cache.
    monkeypatch.setattr(mod, "_ring", lambda *a: pytest.fail("ring stage recomputed"))
    assert mod.run("smoke", out, "cpu")["table_rows"] == result["table_rows"]
    with pytest.raises(ValueError, match="unknown preset 'fast'"):
        mod.run("fast", out, "cpu")


def test_paper_preset_builds_and_takes_steps(tmp_path):
    mod = _module()
    for name, (model, game) in mod.build("paper").items():
        data = TensorDataset(torch.rand(4, 1, 28, 28) * 2 - 1)
        cfg = TrainerConfig(steps=len(game.cycle) + 1, out_dir=tmp_path / name, device="cpu", progress=False,
                            tensorboard=False, ckpt_every=None, grad_clip=None)  # fmt: skip
        last = Trainer(model, game, DataLoader(data, batch_size=2, shuffle=True), cfg).fit()
        assert all(math.isfinite(v) for k, v in last.items() if k.startswith("loss/")), name
