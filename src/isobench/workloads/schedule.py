"""Learning rate of every step, computed once in numpy and handed to each backend step by step."""
from __future__ import annotations

import numpy as np

from .spec import OptimizerSpec, ScheduleSpec


def learning_rates(opt: OptimizerSpec, sched: ScheduleSpec, total_steps: int) -> np.ndarray:
    """float64 array of length ``total_steps``; step ``t`` (0-based) trains with ``lr[t]``."""
    base = opt.learning_rate
    t = np.arange(total_steps, dtype=np.float64)
    if sched.kind == "constant":
        lr = np.full(total_steps, base)
    elif sched.kind == "step":
        lr = base * sched.gamma ** np.floor(t / sched.step_size)
    elif sched.kind == "cosine":
        span = max(total_steps - sched.warmup_steps - 1, 1)
        progress = np.clip((t - sched.warmup_steps) / span, 0.0, 1.0)
        lr = sched.min_lr + (base - sched.min_lr) * 0.5 * (1.0 + np.cos(np.pi * progress))
    else:
        raise ValueError(f"unknown schedule {sched.kind!r}")
    if sched.warmup_steps:
        warm = t < sched.warmup_steps
        lr[warm] = base * (t[warm] + 1) / sched.warmup_steps
    return lr
