import numpy as np
import pytest

from control.maze2d.controller import WaypointController
from control.maze2d.evaluate import OraclePolicy, d4rl_initial_states, evaluate, normalized_score
from control.maze2d.mazes import MAZES, d4rl_to_gym, get_maze, gym_to_d4rl
from control.maze2d.sim import PointMazeSim, make_env


def test_unknown_maze_name():
    with pytest.raises(ValueError, match="unknown maze 'maze2d-huge'"):
        get_maze("maze2d-huge")


def test_goal_outside_maze_and_in_wall():
    m = get_maze("umaze")
    with pytest.raises(ValueError, match="outside the umaze maze"):
        m.validate_goal(np.array([[10.0, 0.0]]))
    with pytest.raises(ValueError, match="wall cell"):
        m.validate_goal(m.cell_center(np.array([[2, 1]])))
    with pytest.raises(ValueError, match="outside"):
        m.validate_cell((7, 1))


@pytest.mark.parametrize("name,goal", [("umaze", (1, 1)), ("medium", (6, 6)), ("large", (7, 9))])
def test_d4rl_goal_cells_and_coordinates(name, goal):
    m = get_maze(name)
    assert m.goal_cell == goal
    rng = np.random.default_rng(0)
    s = rng.normal(size=(5, 4))
    np.testing.assert_allclose(gym_to_d4rl(d4rl_to_gym(s, m), m), s)
    # D4RL places cell (i, j) at (x, y) = (i, j); gym at its own cell centre.
    np.testing.assert_allclose(d4rl_to_gym(np.array(goal, float), m), m.cell_center(np.array(goal)))
    env = make_env(m)
    assert env.unwrapped.maze.maze_map == m.gym_map
    np.testing.assert_allclose(env.unwrapped.maze.cell_rowcol_to_xy(np.array(goal)), m.cell_center(goal))
    env.close()


def test_normalized_score_constants():
    assert [(m.ref_min_score, m.ref_max_score) for m in MAZES.values()] == [
        (23.85, 161.86),
        (13.13, 277.39),
        (6.7, 273.99),
    ]
    m = get_maze("umaze")
    assert normalized_score(23.85, m) == pytest.approx(0.0)
    assert normalized_score(161.86, m) == pytest.approx(100.0)
    assert [m.episode_steps for m in MAZES.values()] == [300, 600, 800]


def test_oracle_reaches_goal():
    m = get_maze("medium")
    res = evaluate(m, OraclePolicy(m), episodes=4, seed=1)
    assert res.success.all()
    assert (res.returns > 50).all()


def test_sim_matches_gym_step():
    m = get_maze("umaze")
    env = make_env(m)
    obs, _ = env.reset(seed=3)
    sim = PointMazeSim(m)
    sim.reset(obs["observation"][:2], obs["observation"][2:])
    rng = np.random.default_rng(0)
    ctrl = WaypointController(m)
    for _ in range(50):
        a = ctrl(obs["observation"], obs["desired_goal"])[0] + rng.normal(0, 0.5, 2)
        obs, *_ = env.step(a)
        sim.step(a.copy())
    np.testing.assert_allclose(sim.state, obs["observation"], atol=1e-8)
    env.close()


def test_d4rl_start_distribution():
    """Starts as D4RL's reset_model: any free cell (goal's included), +-0.1, qvel 0.1 randn; exact goal."""
    m = get_maze("umaze")
    cells, gcells, starts, goals = d4rl_initial_states(m, 700, seed=0)
    again = d4rl_initial_states(m, 700, seed=0)
    for x, y in zip((cells, gcells, starts, goals), again, strict=True):
        np.testing.assert_array_equal(x, y)
    free = {tuple(c) for c in m.free_cells}
    assert {tuple(c) for c in cells} == free  # all 7 cells, the goal cell included
    assert np.abs(starts[:, :2] - m.cell_center(cells)).max() <= 0.1
    assert 0.08 < starts[:, 2:].std() < 0.12
    np.testing.assert_array_equal(goals, np.tile(m.cell_center(np.array(m.goal_cell)), (700, 1)))
    _, gcells, _, goals = d4rl_initial_states(m, 200, seed=1, multi_goal=True)
    assert len({tuple(c) for c in gcells}) == len(free)
    assert np.abs(goals - m.cell_center(gcells)).max() <= 0.1


def test_evaluate_starts_where_drawn():
    m = get_maze("umaze")
    res = evaluate(m, OraclePolicy(m), episodes=3, seed=5, steps=2)
    _, _, starts, goals = d4rl_initial_states(m, 3, seed=5)
    np.testing.assert_allclose(res.starts, starts)
    np.testing.assert_allclose(res.goals, goals)
    np.testing.assert_allclose(res.paths[:, 0], starts[:, :2])
