"""Initial weights, generated once in numpy from the workload seed (float32, canonical layout)."""
from __future__ import annotations

from math import prod

import numpy as np

from .spec import Workload

INIT_STREAM = 2  # seed stream for weights; data split and orders use other streams (see isobench.data)
EMBEDDING_RANGE = 0.05  # embeddings ~ U(-0.05, 0.05), Keras' default


def init_params(workload: Workload) -> dict[str, np.ndarray]:
    """Trainable parameters and BatchNorm state, drawn in layer order from one seeded generator.

    Kernels Glorot-uniform (fan_in = prod(shape[:-1]) and fan_out = receptive field x out, the Keras rule
    for HWIO and (in, 4H) kernels); biases and betas 0; gammas 1; embeddings uniform +-0.05; moving mean 0,
    moving variance 1."""
    if workload.init != "glorot_uniform":
        raise ValueError(f"unknown init {workload.init!r}")
    rng = np.random.default_rng([workload.seed, INIT_STREAM])
    out: dict[str, np.ndarray] = {}
    shapes = {**workload.param_shapes(), **workload.state_shapes()}
    for name, shape in shapes.items():
        leaf = name.rsplit("/", 1)[1]
        if leaf in ("kernel", "recurrent_kernel"):
            receptive = prod(shape[:-2]) if len(shape) > 2 else 1
            fan_in, fan_out = prod(shape[:-1]), receptive * shape[-1]
            limit = np.sqrt(6.0 / (fan_in + fan_out))
            value = rng.uniform(-limit, limit, size=shape)
        elif leaf == "embeddings":
            value = rng.uniform(-EMBEDDING_RANGE, EMBEDDING_RANGE, size=shape)
        elif leaf in ("gamma", "moving_var"):
            value = np.ones(shape)
        else:  # bias, beta, moving_mean
            value = np.zeros(shape)
        out[name] = value.astype(np.float32)
    return out
