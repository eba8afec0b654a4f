"""Runs are never deleted silently, user errors are one line with exit status 2, bad starts are
refused, and damaged cached datasets are regenerated."""

import numpy as np
import pytest

from control.__main__ import main
from control.config import preset
from control.data import DatasetError, load_d4rl
from control.maze2d.dataset import make_dataset
from control.maze2d.mazes import get_maze
from control.runner import train_run
from core.files import write_json
from core.runs import ConfigMismatchError


def _tiny(**changes):
    fields = dict(data_steps=3000, warmup_steps=1, train_steps=2, horizon=32, dim=8, batch_size=4)
    return preset("quick", **{**fields, "ckpt_every": 2, "device": "cpu", **changes})


def test_train_refuses_another_config_and_keeps_the_checkpoints(tmp_path, data_dir):
    run = tmp_path / "run"
    train_run(_tiny(), run, progress=False)
    checkpoints = sorted(p.relative_to(run) for p in (run / "train").rglob("*"))
    assert checkpoints
    with pytest.raises(ConfigMismatchError, match="train_steps: 2 -> 4"):
        train_run(_tiny(train_steps=4), run, progress=False)
    assert sorted(p.relative_to(run) for p in (run / "train").rglob("*")) == checkpoints
    train_run(_tiny(episodes=3, threads=1, solver_steps=5), run, progress=False)  # evaluation-only: resumes
    assert sorted(p.relative_to(run) for p in (run / "train").rglob("*")) == checkpoints


def test_cli_user_errors_are_one_line_with_exit_status_2(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_json(tmp_path / "run" / "planner.json", {"maze": "umaze"})
    cases = [
        (
            ["plan", "--run", "run", "--start", "nan", "0", "--goal", "1", "1"],
            "start [nan, 0.0] is not a finite",
        ),
        (
            ["plan", "--run", "run", "--start", "0", "0", "--goal", "1", "1"],
            "start [0.0, 0.0] lies in a wall",
        ),
        (["plan", "--run", "run", "--start", "1", "1", "--goal", "9", "1"], "goal [9.0, 1.0] is outside"),
        (["plan", "--run", "nothing", "--start", "1", "1", "--goal", "1", "1"], "nothing/planner.json"),
        (["train", "--name", "../elsewhere"], "run name '../elsewhere'"),
        (["train", "--name", str(tmp_path / "abs")], "must be a relative folder name"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "elsewhere").exists() and not (tmp_path / "abs").exists()


def test_damaged_cached_dataset_is_regenerated(data_dir):
    maze = get_maze("umaze")
    path = make_dataset(maze, 3000, seed=1)
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 2])  # an interrupted copy
    with pytest.raises(DatasetError, match=str(path)):
        load_d4rl(path)
    with pytest.warns(UserWarning, match="regenerating"):
        assert make_dataset(maze, 3000, seed=1) == path
    assert path.read_bytes() == good
    data, _ = load_d4rl(path)
    assert len(data["observations"]) == 3000 and np.isfinite(data["observations"]).all()
