"""Initial weights, generated once in numpy from the workload seed (float32, canonical layout)."""
from __future__ import annotations

import numpy as np

from .spec import Workload

INIT_STREAM = 2  # seed stream for weights; data split and orders use other streams (see isobench.data)


def init_params(workload: Workload) -> dict[str, np.ndarray]:
    """Glorot-uniform kernels and zero biases, drawn in layer order from one seeded generator."""
    if workload.init != "glorot_uniform":
        raise ValueError(f"unknown init {workload.init!r}")
    rng = np.random.default_rng([workload.seed, INIT_STREAM])
    params: dict[str, np.ndarray] = {}
    for name, shape in workload.param_shapes().items():
        if name.endswith("/kernel"):
            fan_in, fan_out = shape[0], shape[-1]
            limit = np.sqrt(6.0 / (fan_in + fan_out))
            params[name] = rng.uniform(-limit, limit, size=shape).astype(np.float32)
        else:
            params[name] = np.zeros(shape, dtype=np.float32)
    return params
