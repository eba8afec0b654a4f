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


class _Counting(OraclePolicy):
    def __init__(self, maze):
        super().__init__(maze)
        self.clock = []

    def act(self, obs, goal, t):
        self.clock.append(t)
        return super().act(obs, goal, t)


def test_evaluate_runs_d4rl_episodes_with_d4rl_reward():
    """Full episodes of D4RL's length (umaze: 300 steps) and D4RL's reward, +1 for every step
    that ends within 0.5 of the goal, recomputed here from the recorded paths."""
    m = get_maze("umaze")
    policy = _Counting(m)
    res = evaluate(m, policy, episodes=3, seed=2)
    assert policy.clock == list(range(300)) and res.paths.shape == (3, 301, 2)
    dist = np.linalg.norm(res.paths[:, 1:] - res.goals[:, None], axis=-1)
    np.testing.assert_array_equal(res.returns, (dist <= 0.5).sum(1))
    np.testing.assert_array_equal(res.success, dist[:, -1] <= 0.5)
    assert ((dist > 0.5) & (dist <= 1.0)).any()  # the radius matters on these paths


def test_generated_actions_are_the_controller_plus_noise():
    """The data generator's inlined control law is WaypointController's: each recorded action is
    clip(controller(obs, goal) + N(0, 0.5^2) noise), the noise being the seed's first draws."""
    from control.maze2d.generate import ACTION_NOISE, generate_stream

    m = get_maze("medium")
    data = generate_stream(m, 3000, seed=4)
    noise = np.random.default_rng(4).normal(0.0, ACTION_NOISE, size=(3000, 2))
    obs = data["observations"].astype(np.float64)
    ctrl = WaypointController(m)(obs, data["infos/goal"].astype(np.float64))
    expected = np.clip(ctrl + noise, -1.0, 1.0)
    np.testing.assert_allclose(data["actions"], expected, rtol=0, atol=1e-4)  # float32 storage
    assert data["timeouts"].sum() >= 5  # several goals: the waypoint logic is exercised
