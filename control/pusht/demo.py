"""The Push-T stage of ``python -m control demo``: an expert rollout (GIF + strip) and the two-way
multimodality task trained for a few hundred steps (a CPU minute or two)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .env import make_env
from .expert import PushExpert
from .figures import plot_strip, write_gif
from .rollout import eval_seeds
from .twoway import evaluate_two_way, train_two_way, two_way_demos
from .twoway_plot import plot_two_way

__all__ = ["demo_pusht"]


def _expert_frames(seed: int, max_steps: int = 300, every: int = 3, size: int = 160):
    from PIL import Image

    env = make_env(max_episode_steps=max_steps)
    env.reset(seed=seed)
    u = env.unwrapped
    expert = PushExpert(seed=seed)
    frames, best, ok, steps = [], 0.0, False, 0

    def grab():
        frames.append(np.asarray(Image.fromarray(env.render()).resize((size, size), Image.BILINEAR)))

    grab()
    while not ok and steps < max_steps:
        pose = np.array([u.block.position.x, u.block.position.y, u.block.angle])
        push = expert.plan(np.array(u.agent.position), np.array(u.agent.velocity), pose)
        targets = push.targets if push is not None else np.array(u.agent.position)[None]
        for target in targets:
            _, r, term, trunc, info = env.step(target)
            steps += 1
            best = max(best, float(r))
            if steps % every == 0 or term or trunc:
                grab()
            if term or trunc:
                ok = bool(info["is_success"])
                break
        if trunc:
            break
    env.close()
    return np.stack(frames), best, ok, steps


def demo_pusht(out: Path, seed: int = 0, twoway_steps: int = 300) -> list[str]:
    """Write ``pusht_expert.gif``, ``pusht_strip.png`` and ``pusht_twoway.png`` into ``out``;
    returns report lines (markdown)."""
    out = Path(out)
    frames, score, ok, steps = _expert_frames(eval_seeds(1, seed)[0])
    write_gif(frames, out / "pusht_expert.gif")
    plot_strip(frames, out / "pusht_strip.png", title=f"Push-T expert: score {score:.2f}, success {ok}")
    _, _, sides = two_way_demos(100, seed)
    paths, rows = {}, []
    for kind in ("diffusion", "regression"):
        r = evaluate_two_way(train_two_way(kind, twoway_steps, seed), 50, seed)
        paths[kind] = r.pop("paths")
        rows.append(
            f"| {kind} | {r['left_fraction']:.2f} | {r['success_rate']:.2f} | {r['collision_rate']:.2f} |"
        )
    demo_states, _, _ = two_way_demos(30, seed)
    plot_two_way(demo_states, paths, out / "pusht_twoway.png")
    return [
        "## Control: Diffusion Policy on Push-T (demo scale)",
        "",
        f"The push-planner expert that writes the demonstrations, on evaluation start "
        f"{eval_seeds(1, seed)[0]}: "
        f"score (max clip(coverage / 0.95)) {score:.2f}, success {ok}, {steps} steps.",
        "",
        "![Push-T expert rollout](./pusht_strip.png) (animation: `pusht_expert.gif`)",
        "",
        f"Two-way task (demonstrations pass the obstacle on the left in {(sides < 0).mean():.2f} of "
        f"100 episodes); policies trained {twoway_steps} steps, 50 rollouts each:",
        "",
        "| policy | left fraction | success | collision |",
        "|---|---|---|---|",
        *rows,
        "",
        "![two-way rollouts](./pusht_twoway.png)",
        "",
        "`python -m control benchmark pusht --preset quick` trains and scores the Push-T policies.",
        "",
    ]
