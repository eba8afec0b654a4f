"""A push planner for Push-T that checks every candidate push in a copy of the physics.

Each decision enumerates pushes: a contact point on one of the T's 8 outer edges, a push along
the edge's inward normal, and a push length. The agent's path there (straight, or around the
block's inflated outline) and the push are simulated in a private pymunk space set to the
environment's current state; a push is scored by the decrease of the mean distance between the
T's keypoints and the goal's keypoints per environment step it takes. The planner then executes
one of the near-best pushes (chosen at random from a seeded generator, which varies the
demonstrations) in the real environment and plans again.

Restoring state: the simulator's block is rotated *before* it is positioned, so the body origin
lands where the environment reports it (the environment's own ``reset_to_state`` does the
opposite and moves the block about its centre of gravity).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .env import GOAL_POSE, TEE_OUTLINE, block_keypoints

__all__ = ["ExpertConfig", "PushExpert", "Push"]

AGENT_RADIUS = 15.0
GOAL_KP = block_keypoints(GOAL_POSE)


@dataclass(frozen=True)
class ExpertConfig:
    """Candidate pushes and their scoring.

    Attributes:
        contact_fractions: positions along each edge where the agent makes contact.
        push_lengths: push distances (pixels).
        push_speed: agent target advance per environment step while pushing (pixels).
        travel_speed: agent target advance per environment step while travelling (pixels).
        top_k: candidates (ranked by a travel-free simulation) whose full path is simulated.
        near_best: execute a random push scoring at least this fraction of the best.
    """

    contact_fractions: tuple[float, ...] = (0.15, 0.5, 0.85)
    push_lengths: tuple[float, ...] = (4.0, 12.0, 35.0, 90.0)
    push_speed: float = 12.0
    travel_speed: float = 30.0
    top_k: int = 6
    near_best: float = 0.85


@dataclass
class Push:
    """A planned push: the agent targets to send, one per environment step, (n, 2) pixels."""

    targets: np.ndarray
    score: float


def _kp_distance(pose: np.ndarray) -> float:
    return float(np.linalg.norm(block_keypoints(pose) - GOAL_KP, axis=-1).mean())


class _Shadow:
    """A private copy of the environment's physics (same bodies, shapes and PD control)."""

    def __init__(self) -> None:
        import pymunk
        from gym_pusht.envs.pusht import PushTEnv

        self.space = pymunk.Space()
        self.space.gravity = 0, 0
        self.space.damping = 0.0
        self.space.add(
            *[
                PushTEnv.add_segment(self.space, a, b, 2)
                for a, b in (
                    ((5, 506), (5, 5)),
                    ((5, 5), (506, 5)),
                    ((506, 5), (506, 506)),
                    ((5, 506), (506, 506)),
                )
            ]
        )
        self.agent = PushTEnv.add_circle(self.space, (256, 400), AGENT_RADIUS)
        self.block, _ = PushTEnv.add_tee(self.space, (256, 300), 0)
        self.kp, self.kv, self.dt, self.substeps = 100.0, 20.0, 0.01, 10

    def set(self, agent_pos, agent_vel, block_pose) -> None:
        self.agent.position = (float(agent_pos[0]), float(agent_pos[1]))
        self.agent.velocity = (float(agent_vel[0]), float(agent_vel[1]))
        self.block.angle = float(block_pose[2])  # rotate first, then place the body origin
        self.block.position = (float(block_pose[0]), float(block_pose[1]))
        self.block.velocity = (0.0, 0.0)
        self.block.angular_velocity = 0.0
        self.space.reindex_shapes_for_body(self.block)

    def run(self, targets: np.ndarray) -> np.ndarray:
        """Send the targets (n, 2); the block pose (3,) afterwards.

        The agent is kinematic, so its position and velocity are integrated here in floats
        exactly as pymunk does (x += v dt after the PD update), and only the velocity is set.
        """
        agent, step, dt = self.agent, self.space.step, self.dt
        kp, kv = self.kp, self.kv
        px, py = agent.position
        vx, vy = agent.velocity
        for tx, ty in targets.tolist():
            for _ in range(self.substeps):
                vx += (kp * (tx - px) - kv * vx) * dt
                vy += (kp * (ty - py) - kv * vy) * dt
                agent.velocity = (vx, vy)
                step(dt)
                px += vx * dt
                py += vy * dt
        p = self.block.position
        return np.array([p.x, p.y, self.block.angle])


def _segment(a: np.ndarray, b: np.ndarray, speed: float) -> np.ndarray:
    """Targets from a (exclusive) to b (inclusive) in steps of at most ``speed``."""
    n = max(1, int(np.ceil(np.linalg.norm(b - a) / speed)))
    return a + (b - a) * (np.arange(1, n + 1)[:, None] / n)


def _outline_world(pose: np.ndarray, pad: float) -> np.ndarray:
    """The T's 8 corners pushed ``pad`` pixels out along both adjacent edges' outward normals, (8, 2)."""
    offset = pad * (np.roll(EDGE_NORMALS, 1, 0) + EDGE_NORMALS)
    return block_keypoints(pose, TEE_OUTLINE + offset)


def _edge_normals() -> np.ndarray:
    """Outward unit normal of each outline edge k (from corner k to corner k + 1), (8, 2)."""
    d = np.roll(TEE_OUTLINE, -1, 0) - TEE_OUTLINE
    d = d / np.linalg.norm(d, axis=-1, keepdims=True)
    n = np.stack([d[:, 1], -d[:, 0]], -1)
    mid = (TEE_OUTLINE + np.roll(TEE_OUTLINE, -1, 0)) / 2
    inside = _inside_tee(mid + n)
    return np.where(inside[:, None], -n, n)


def _inside_tee(p: np.ndarray) -> np.ndarray:
    x, y = p[..., 0], p[..., 1]
    bar = (np.abs(x) < 60) & (y > 0) & (y < 30)
    stem = (np.abs(x) < 15) & (y >= 30) & (y < 120)
    return bar | stem


EDGE_NORMALS = _edge_normals()


def _path_clear(path: np.ndarray, pose: np.ndarray, clearance: float, skip: float = 20.0) -> bool:
    """True when every point of ``path`` (n, 2) farther than ``skip`` pixels from its start keeps
    ``clearance`` pixels from the T (pose (3,)); the agent may start touching the block."""
    path = path[np.linalg.norm(path - path[0], axis=-1) > skip]
    if len(path) == 0:
        return True
    c, s = np.cos(pose[2]), np.sin(pose[2])
    local = (path - pose[:2]) @ np.array([[c, -s], [s, c]])  # world -> body: R^T (p - pos)
    x, y = local[:, 0], local[:, 1]
    dx_bar = np.maximum(np.abs(x) - 60, 0)
    dy_bar = np.maximum(np.maximum(-y, y - 30), 0)
    dx_stem = np.maximum(np.abs(x) - 15, 0)
    dy_stem = np.maximum(np.maximum(30 - y, y - 120), 0)
    d = np.minimum(np.hypot(dx_bar, dy_bar), np.hypot(dx_stem, dy_stem))
    return bool((d > clearance).all())


def _densify(points: list[np.ndarray], step: float = 5.0) -> np.ndarray:
    out = [points[0][None]]
    for a, b in zip(points[:-1], points[1:], strict=True):
        out.append(_segment(a, b, step))
    return np.concatenate(out)


class PushExpert:
    """Plans and executes pushes until the T covers the goal; deterministic given its seed."""

    def __init__(self, config: ExpertConfig | None = None, seed: int = 0) -> None:
        self.cfg = config or ExpertConfig()
        self.rng = np.random.default_rng(seed)
        self.sim = _Shadow()

    def _candidates(self) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """(contact, inward direction, push end) per candidate, in body coordinates."""
        out = []
        for k in range(len(TEE_OUTLINE)):
            a, b = TEE_OUTLINE[k], TEE_OUTLINE[(k + 1) % len(TEE_OUTLINE)]
            n = EDGE_NORMALS[k]
            for f in self.cfg.contact_fractions:
                contact = a + f * (b - a)
                for length in self.cfg.push_lengths:
                    out.append((contact, -n, length))
        return out

    def _route(self, start: np.ndarray, goal: np.ndarray, pose: np.ndarray) -> list[np.ndarray] | None:
        """Waypoints from start to goal that keep clear of the block (direct or via corners)."""
        clearance = AGENT_RADIUS + 2.0
        if _path_clear(_densify([start, goal]), pose, clearance):
            return [goal]
        corners = _outline_world(pose, 35.0)
        best, best_len = None, np.inf
        for i, ci in enumerate(corners):
            for via in ([ci], *([ci, cj] for j, cj in enumerate(corners) if j != i)):
                pts = [start, *via, goal]
                length = sum(np.linalg.norm(q - p) for p, q in zip(pts[:-1], pts[1:], strict=True))
                if length < best_len and _path_clear(_densify(pts), pose, clearance):
                    best, best_len = list(via) + [goal], length
        return best

    def plan(self, agent_pos: np.ndarray, agent_vel: np.ndarray, pose: np.ndarray) -> Push | None:
        """The next push from the current state (agent xy, agent velocity, block x, y, angle)."""
        cfg = self.cfg
        d0 = _kp_distance(pose)
        c, s = np.cos(pose[2]), np.sin(pose[2])
        rot = np.array([[c, -s], [s, c]])
        quick = []
        for contact, inward, length in self._candidates():
            start = rot @ (contact - inward * (AGENT_RADIUS + 3.0)) + pose[:2]
            end = start + rot @ inward * (length + AGENT_RADIUS * 0.0)
            if not (np.all(start > 20) and np.all(start < 492)):
                continue
            push = _segment(start, end, cfg.push_speed)
            push = np.concatenate([push, push[-1:]])  # one step to let the agent catch up
            self.sim.set(start, (0.0, 0.0), pose)
            gain = d0 - _kp_distance(self.sim.run(push))
            quick.append((gain / len(push), start, push))
        quick.sort(key=lambda q: -q[0])
        scored = []
        for _, start, push in quick[: cfg.top_k]:
            back = start - (push[-1] - start) / max(np.linalg.norm(push[-1] - start), 1e-9) * 15.0
            route = self._route(np.asarray(agent_pos, dtype=np.float64), back, pose)
            if route is None:
                continue
            travel = _segment_chain(
                [np.asarray(agent_pos, dtype=np.float64), *route, start], cfg.travel_speed
            )
            targets = np.concatenate([travel, push])
            self.sim.set(agent_pos, agent_vel, pose)
            gain = d0 - _kp_distance(self.sim.run(targets))
            scored.append(Push(targets, gain / len(targets)))
        if not scored:
            return None
        best = max(p.score for p in scored)
        if best <= 0:
            return max(scored, key=lambda p: p.score)
        good = [p for p in scored if p.score >= cfg.near_best * best]
        return good[int(self.rng.integers(len(good)))]


def _segment_chain(points: list[np.ndarray], speed: float) -> np.ndarray:
    return np.concatenate([_segment(a, b, speed) for a, b in zip(points[:-1], points[1:], strict=True)])


def rollout_expert(env, expert: PushExpert, seed: int, max_steps: int = 300):
    """One expert episode in ``env`` (a Push-T env) reset with ``seed``.

    Returns (states (T, 5), actions (T, 2), rewards (T,), success): states[t] is the observation
    on which actions[t] was sent; the episode ends at success or after ``max_steps`` steps.
    """
    obs, _ = env.reset(seed=seed)
    u = env.unwrapped
    states, actions, rewards = [], [], []
    success = False
    while len(actions) < max_steps and not success:
        pose = np.array([u.block.position.x, u.block.position.y, u.block.angle])
        push = expert.plan(np.array(u.agent.position), np.array(u.agent.velocity), pose)
        if push is None:
            targets = np.array(u.agent.position)[None]
        else:
            targets = push.targets
        for target in targets:
            states.append(obs)
            actions.append(target.astype(np.float32))
            obs, reward, terminated, truncated, info = env.step(target)
            rewards.append(reward)
            success = bool(info["is_success"])
            if success or terminated or truncated or len(actions) >= max_steps:
                break
    return np.array(states), np.array(actions), np.array(rewards), success
