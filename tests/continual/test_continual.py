"""Scenarios (task order, splits, bad input), metrics on a hand-made matrix, every method through
the shared loops, the paper preset's sizes, forgetting and its bounds on Split-Digits, the CLI."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from continual.__main__ import main
from continual.benchmark import PRESETS, run_benchmark, run_stream, stream_metrics
from continual.demo import run_demo
from continual.methods import METHODS, MethodConfig, make_learner
from continual.scenarios import Scenario, make_scenario

TINY = MethodConfig(
    hidden=16, latent_dim=8, batch_size=16, classifier_steps=3, gan_steps=2, n_critic=1, fisher_samples=4
)


def _toy_data(classes: int = 4, per: int = 6, shape=(1, 4, 4)) -> dict:
    g = torch.Generator().manual_seed(0)
    data = {}
    for split in ("train", "val", "test"):
        y = torch.arange(classes).repeat_interleave(per)
        x = torch.rand(len(y), *shape, generator=g) * 0.2 + y.view(-1, 1, 1, 1) / classes
        data[split] = (x * 2 - 1, y)
    return data


def test_split_digits_tasks_classes_and_splits():
    a, b = make_scenario("split-digits", 0), make_scenario("split-digits", 1)
    order = [t.classes for t in a]
    assert len(a) == 5 and all(len(c) == 2 for c in order)
    assert sorted(c for cs in order for c in cs) == list(range(10))
    assert order == [t.classes for t in make_scenario("split-digits", 0)]  # fixed by the seed
    assert order != [t.classes for t in b]
    for task in a:
        for split, per_class in (("train", 360), ("val", 40), ("test", 100)):
            s = task.split(split)
            assert set(s.y.tolist()) == set(task.classes)
            assert len(s) == per_class * 2 and s.x.shape[1:] == (1, 20, 20)
    # validation carved from the training data: no image is in both
    t0 = a[0]
    flat_tr, flat_va = t0.train.x.flatten(1), t0.val.x.flatten(1)
    assert not any(bool((flat_tr == v).all(1).any()) for v in flat_va[:20])
    ten = make_scenario("split-digits-10", 0)
    assert len(ten) == 10 and all(len(t.classes) == 1 for t in ten)


def test_scenario_bad_input_is_named():
    data = _toy_data()
    with pytest.raises(ValueError, match="class 1 is in task 0 and task 1"):
        Scenario("s", data, [[0, 1], [1, 2]], num_classes=4)
    Scenario("s", data, [[0, 1], [1, 2]], num_classes=4, allow_overlap=True)
    with pytest.raises(ValueError, match="task 1 is empty"):
        Scenario("s", data, [[0, 1], []], num_classes=4)
    x, y = data["test"]
    keep = y != 3
    broken = dict(data, test=(x[keep], y[keep]))
    with pytest.raises(ValueError, match="class 3 of task 1 has no example in split 'test'"):
        Scenario("s", broken, [[0, 1], [2, 3]], num_classes=4)
    with pytest.raises(ValueError, match="valid scenarios: split-fashion-mnist"):
        make_scenario("split-cifar")
    with pytest.raises(ValueError, match="valid methods: finetune, joint, ewc"):
        make_learner("lwf", (1, 4, 4), 4, TINY, torch.device("cpu"), 0)


def test_stream_metrics_on_a_hand_matrix():
    r = [[0.9, 0.0, 0.0], [0.5, 0.8, 0.0], [0.3, 0.6, 0.7]]
    m = stream_metrics(r)
    assert m["final_accuracy"] == pytest.approx((0.3 + 0.6 + 0.7) / 3)
    assert m["accuracy_after_task"][1] == pytest.approx(0.65)
    assert m["bwt"] == pytest.approx(((0.3 - 0.9) + (0.6 - 0.8)) / 2)
    assert m["forgetting"] == pytest.approx(((0.9 - 0.3) + (0.8 - 0.6)) / 2)
    with pytest.raises(ValueError, match="square"):
        stream_metrics([[1.0, 0.0]])


@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_runs_the_stream(method):
    scenario = Scenario("toy", _toy_data(), [[0, 1], [2, 3]], num_classes=4)
    metrics, grids = run_stream(scenario, method, TINY, device=torch.device("cpu"), seed=0, grid_per_class=2)
    assert len(metrics["accuracy_matrix"]) == 2 and 0 <= metrics["final_accuracy"] <= 1
    learner_has_gen = method in ("dgr", "mergan", "tmn", "tmn-no-critic-head", "tmn-no-classifier")
    assert bool(grids) == learner_has_gen
    if grids:
        assert grids[1].shape[0] in (8, 2 * 2 * 2)  # 4 seen classes x 2 per class
        assert grids[1].abs().max() <= 1


def test_paper_preset_builds_and_takes_steps():
    cfg = PRESETS["paper"]
    assert cfg.seeds >= 3 and cfg.train_per_class is None
    small = MethodConfig(
        **{**cfg.method.__dict__, "classifier_steps": 2, "gan_steps": 1, "fisher_samples": 2}
    )
    data = _toy_data(shape=(1, 28, 28))
    scenario = Scenario("toy", data, [[0, 1], [2, 3]], num_classes=4)
    metrics, grids = run_stream(scenario, "tmn", small, device=torch.device("cpu"), seed=0, grid_per_class=1)
    learner = make_learner("tmn", (1, 28, 28), 10, cfg.method, torch.device("cpu"), 0)
    assert learner.classifier[1].out_features == cfg.method.hidden == 400
    assert len(grids) == 2 and grids[0].shape[-2:] == (28, 28)


def test_tmn_targets_from_summaries():
    from continual.benchmark import tmn_targets

    rows = {"tmn": 0.8, "dgr": 0.7, "mergan": 0.79, "ewc": 0.2, "joint": 0.9, "tmn-no-generator": 0.3}
    res = {m: {"final_accuracy": {"mean": v}} for m, v in rows.items()}
    t = tmn_targets(res)
    assert t["over_best_replay"]["baseline"] == "mergan" and not t["over_best_replay"]["met"]
    assert t["over_ewc"]["points"] == pytest.approx(60.0) and t["behind_joint"]["met"]
    assert t["ablation_cost"]["tmn-no-generator"]["points"] == pytest.approx(50.0)
    assert tmn_targets({"ewc": res["ewc"]}) == {}


def test_forgetting_and_its_bounds_on_split_digits():
    scenario = make_scenario("split-digits", 0, train_per_class=100, test_per_class=50)
    cfg = MethodConfig(hidden=64, classifier_steps=100, gan_steps=0, batch_size=64)
    fine, _ = run_stream(scenario, "finetune", cfg, device=torch.device("cpu"), seed=0)
    joint, _ = run_stream(scenario, "joint", cfg, device=torch.device("cpu"), seed=0)
    r = fine["accuracy_matrix"]
    assert sum(r[i][i] for i in range(5)) / 5 > 0.85  # each task is learned...
    assert fine["final_accuracy"] < 0.3 and fine["forgetting"] > 0.6  # ...and forgotten
    assert joint["final_accuracy"] > 0.7


def test_benchmark_caches_and_resumes(tmp_path, monkeypatch):
    import continual.benchmark as bm

    scenario = Scenario("toy", _toy_data(), [[0, 1], [2, 3]], num_classes=4)
    monkeypatch.setattr(bm, "make_scenario", lambda *a, **k: scenario)
    cfg = bm.BenchmarkConfig(scenarios=("split-digits",), methods=("finetune", "dgr"), seeds=2, method=TINY)
    payload = run_benchmark(cfg, tmp_path, device=torch.device("cpu"))
    res = payload["results"]["split-digits"]["dgr"]
    assert res["seeds"] == 2 and set(res["final_accuracy"]) == {"mean", "std"}
    assert (tmp_path / "accuracy-split-digits.png").exists() and (
        tmp_path / "replay-split-digits-dgr.png"
    ).exists()
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["results"]["split-digits"]["dgr"]["final_accuracy"] == res["final_accuracy"]
    assert len(saved["results"]["split-digits"]["finetune"]["runs"]) == 2
    assert "over_best_replay" not in saved["targets"].get("split-digits", {})  # no TMN row
    calls = []
    real_run_stream = bm.run_stream
    monkeypatch.setattr(bm, "run_stream", lambda *a, **k: calls.append(a) or real_run_stream(*a, **k))
    run_benchmark(cfg, tmp_path, device=torch.device("cpu"))  # everything cached
    assert calls == []
    changed = dataclasses.replace(cfg, method=dataclasses.replace(TINY, classifier_steps=4))
    run_benchmark(changed, tmp_path, device=torch.device("cpu"))  # new settings: no stale cache
    assert len(calls) == 4


def test_replay_grids_leave_the_results_alone():
    scenario = Scenario("toy", _toy_data(), [[0, 1], [2, 3]], num_classes=4)
    for method in ("mergan", "tmn"):
        plain, _ = run_stream(scenario, method, TINY, device=torch.device("cpu"), seed=0)
        drawn, grids = run_stream(
            scenario, method, TINY, device=torch.device("cpu"), seed=0, grid_per_class=3
        )
        assert grids and drawn["accuracy_matrix"] == plain["accuracy_matrix"]
        assert drawn["val_final_accuracy"] == plain["val_final_accuracy"]


def test_masked_generator_keeps_earlier_classes_exactly():
    from continual.methods import _MaskedGenerator

    torch.manual_seed(0)
    gen = _MaskedGenerator(8, (1, 4, 4), 32, 4)

    def learn(classes: tuple[int, ...], steps: int = 30) -> None:
        gen.begin_task(classes)
        opt = torch.optim.Adam(gen.param_groups(1e-2))  # a fresh optimizer per task, as train_gan
        y = torch.tensor(classes).repeat(8)
        for i in range(steps):
            gen.anneal(i / (steps - 1))
            loss = (gen(torch.randn(len(y), 8), y) - 0.5).pow(2).mean() + gen.mask_penalty(0.75)
            opt.zero_grad()
            loss.backward()
            gen.protect_gradients()
            opt.step()
        gen.end_task()

    learn((0, 1))
    z, y = torch.randn(6, 8), torch.tensor([0, 1, 0, 1, 0, 1])
    first, used = gen(z, y).detach().clone(), gen.used.clone()
    assert 0 < used.sum() < used.numel()
    learn((2, 3))
    assert torch.equal(gen(z, y), first)  # task 0's images are untouched by task 1's training
    assert bool((gen.used >= used).all()) and gen.used.sum() > used.sum()
    # without the record of used units, the same training moves them
    gen.used.zero_()
    gen.task -= 1
    learn((2, 3))
    assert not torch.allclose(gen(z, y), first)
    with pytest.raises(ValueError, match=r"class\(es\) \[1\] belong to no task"):
        _MaskedGenerator(8, (1, 4, 4), 32, 4)(torch.randn(1, 8), torch.tensor([1]))


def test_growing_masked_generator_keeps_free_units_and_earlier_classes():
    from continual.methods import _MaskedGenerator

    torch.manual_seed(0)
    gen = _MaskedGenerator(8, (1, 4, 4), 32, 6, grow=True)
    z, y = torch.randn(6, 8), torch.tensor([0, 1, 0, 1, 0, 1])
    first = None
    for classes in ((0, 1), (2, 3), (4, 5)):
        gen.begin_task(classes)
        # DGMw: every layer starts the task with at least as many free units as the first task had
        assert int((1 - gen.used).sum(1).min()) == 32
        opt = torch.optim.Adam(gen.param_groups(1e-2))
        yc = torch.tensor(classes).repeat(8)
        for i in range(30):
            gen.anneal(i / 29)
            loss = (gen(torch.randn(len(yc), 8), yc) - 0.5).pow(2).mean() + gen.mask_penalty(0.75)
            opt.zero_grad()
            loss.backward()
            gen.protect_gradients()
            opt.step()
        gen.end_task()
        if first is None:
            first = gen(z, y).detach().clone()
        assert torch.equal(gen(z, y), first)  # the first task's images survive every growth
    assert gen.width > 32 and gen.layers[1].weight.shape == (gen.width, gen.width)
    assert gen.out.weight.shape == (16, gen.width)


def test_tmn_generator_choice_is_validated():
    with pytest.raises(ValueError, match="tmn_generator must be one of"):
        MethodConfig(tmn_generator="hat")
    scenario = Scenario("toy", _toy_data(), [[0, 1], [2, 3]], num_classes=4)
    for choice in ("ewc", "masks", "growing-masks"):
        cfg = dataclasses.replace(TINY, tmn_generator=choice)
        metrics, _ = run_stream(scenario, "tmn", cfg, device=torch.device("cpu"), seed=0)
        assert 0 <= metrics["final_accuracy"] <= 1 and metrics["generator_parameters"] > 0


def test_generator_width_is_its_own_setting():
    with pytest.raises(ValueError, match="generator_hidden must be >= 1"):
        MethodConfig(generator_hidden=0)
    wide = dataclasses.replace(TINY, generator_hidden=40)
    sizes = {}
    for cfg in (TINY, wide):
        learner = make_learner("mergan", (1, 4, 4), 4, cfg, torch.device("cpu"), seed=0)
        sizes[cfg.gen_width] = sum(p.numel() for p in learner.gen.parameters())
        assert learner.classifier[1].out_features == 16  # the classifier keeps ``hidden``
    assert sizes[40] > sizes[16]


def test_cli_rejects_unknown_method_and_field(capsys):
    with pytest.raises(SystemExit) as err:
        main(["benchmark", "--methods", "lwf"])
    assert err.value.code == 2
    assert "tmn-no-generator" in capsys.readouterr().err
    assert main(["benchmark", "--set", "nonsense=1", "--scenarios", "split-digits"]) == 2
    assert "unknown config field(s) ['nonsense']" in capsys.readouterr().err
    assert main(["benchmark", "--set", "generator_hidden=wide", "--scenarios", "split-digits"]) == 2
    assert "MethodConfig.generator_hidden must be int | None, got 'wide'" in capsys.readouterr().err


def test_demo_writes_report_and_figures(tmp_path):
    run_demo(tmp_path, methods=("finetune", "tmn"), config=TINY, train_per_class=20)
    for name in ("metrics.json", "report.md", "accuracy_matrix.png", "replay_tmn.png"):
        assert (tmp_path / name).exists()
    assert "| tmn |" in (tmp_path / "report.md").read_text()
