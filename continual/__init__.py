"""Class-incremental continual learning by generative replay: scenarios (Split-Fashion-MNIST,
Split-Digits, one-class-per-task variants), baselines (fine-tuning, joint, EWC, SI, DGR, MeRGAN)
and Triple-Memory Networks with its ablations, all trained by the same loops."""

from .benchmark import PRESETS, BenchmarkConfig, run_benchmark, run_stream, stream_metrics
from .methods import METHODS, Learner, MethodConfig, make_learner
from .scenarios import SCENARIOS, Scenario, Split, Task, make_scenario

__all__ = [
    "METHODS",
    "PRESETS",
    "SCENARIOS",
    "BenchmarkConfig",
    "Learner",
    "MethodConfig",
    "Scenario",
    "Split",
    "Task",
    "make_learner",
    "make_scenario",
    "run_benchmark",
    "run_stream",
    "stream_metrics",
]
