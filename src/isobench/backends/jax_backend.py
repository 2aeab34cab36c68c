"""JAX backend in plain JAX (no flax, no optax): a dict pytree of parameters, a pure forward function,
``jax.value_and_grad`` and an SGD update by ``tree_map``, all under one ``jax.jit`` step.

jax is imported in :meth:`JaxBackend.setup` / :meth:`JaxBackend.build` only.
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np

from ..data import Dataset
from ..workloads.spec import Dense, ReLU, Workload
from .base import Backend, Trainer, check_build, env_flags


def _forward_fn(workload: Workload, display: str):
    """``forward(params, x) -> logits`` for the workload's layers, params keyed by canonical name."""
    import jax
    import jax.numpy as jnp

    layers = []
    for layer in workload.layers:
        if isinstance(layer, Dense):  # canonical layout (in, out): x @ kernel
            layers.append(lambda p, x, n=layer.name: x @ p[f"{n}/kernel"] + p[f"{n}/bias"])
        elif isinstance(layer, ReLU):
            layers.append(lambda p, x: jax.nn.relu(x))
        else:
            raise NotImplementedError(f"{display} backend has no layer {layer.kind!r}")

    def forward(params, x):
        x = jnp.reshape(x, (x.shape[0], -1))  # flatten in canonical (NHWC) order
        for f in layers:
            x = f(params, x)
        return x

    return forward


class JaxTrainer(Trainer):
    """Parameters (and momentum velocity) as device arrays, replaced by every jitted step."""

    def __init__(self, workload: Workload, params: dict[str, np.ndarray], data: Dataset, mode: str):
        import jax
        import jax.numpy as jnp

        forward = _forward_fn(workload, JaxBackend.display)
        lr, momentum = workload.optimizer.learning_rate, workload.optimizer.momentum
        tree_map = jax.tree_util.tree_map

        def nll(logits, y):  # per-example softmax cross-entropy
            return -jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], axis=1)[:, 0]

        def xent(logits, y):  # mean over the batch
            return jnp.mean(nll(logits, y))

        def batch_loss(p, x_all, y_all, idx, mask):  # gather inside the compiled function
            # mean over the real examples: a partial batch is padded to full size with mask 0
            return jnp.sum(nll(forward(p, x_all[idx]), y_all[idx]) * mask) / jnp.sum(mask)

        def step(p, velocity, x_all, y_all, idx, mask):
            loss, g = jax.value_and_grad(batch_loss)(p, x_all, y_all, idx, mask)
            if momentum:  # heavy-ball, torch convention: v = m*v + g; p -= lr*v
                velocity = tree_map(lambda v, g: momentum * v + g, velocity, g)
                g = velocity
            return tree_map(lambda w, g: w - lr * g, p, g), velocity, loss

        def evaluate(p, x, y):
            logits = forward(p, x)
            return xent(logits, y), jnp.sum(jnp.argmax(logits, axis=1) == y)

        compile_ = {"jit": jax.jit}[mode]  # later modes: eager (no jit)
        self._step = compile_(step, donate_argnums=(0, 1))  # params and velocity are updated in place
        self._grads = compile_(jax.grad(batch_loss))
        self._forward = compile_(forward)
        self._evaluate = compile_(evaluate)
        self.p = {k: jnp.asarray(v) for k, v in params.items()}
        self.velocity = tree_map(jnp.zeros_like, self.p) if momentum else None
        self.x_train, self.y_train = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
        self.x_test, self.y_test = jnp.asarray(data.x_test), jnp.asarray(data.y_test)
        self._n_test = len(data.y_test)
        self._batch = workload.batch_size

    def _padded(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Indices padded to the full batch size and a 0/1 mask: the partial last batch of an epoch
        reuses the compiled step instead of compiling a second one for its shape (JAX best practice;
        TensorFlow gets the same from its ``None`` batch signature, torch needs nothing)."""
        n = len(idx)
        # int32 indices: jax (x64 off) would narrow int64 anyway
        padded = np.zeros(max(n, self._batch), dtype=np.int32)
        padded[:n] = idx
        mask = np.zeros(len(padded), dtype=np.float32)
        mask[:n] = 1.0
        return padded, mask

    def train_step(self, idx: np.ndarray) -> float:
        self.p, self.velocity, loss = self._step(self.p, self.velocity, self.x_train, self.y_train,
                                                 *self._padded(idx))
        return float(loss)  # blocks until the step is done

    def evaluate(self) -> tuple[float, float]:
        loss, correct = self._evaluate(self.p, self.x_test, self.y_test)
        return float(loss), int(correct) / self._n_test

    def logits(self, x: np.ndarray) -> np.ndarray:
        return np.array(self._forward(self.p, np.asarray(x, dtype=np.float32)))

    def gradients(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        g = self._grads(self.p, self.x_train, self.y_train, *self._padded(idx))
        return {k: np.array(v) for k, v in g.items()}

    def params(self) -> dict[str, np.ndarray]:
        return {k: np.array(v) for k, v in self.p.items()}  # copies: the buffers are donated next step


class JaxBackend(Backend):
    """JAX (XLA) on the CPU; mode ``jit``."""

    name = "jax"
    display = "JAX"
    distribution = "jax"
    import_name = "jax"
    install_hint = "pip install 'isobench[jax]'  (jax[cpu]==0.10.2)"
    modes = ("jit",)

    def setup(self, threads: int) -> dict[str, Any]:
        import jax
        import jaxlib

        return {
            "version": jax.__version__,
            "jaxlib_version": jaxlib.__version__,
            "threads": None,  # no thread knob: XLA's CPU thread pool is sized by the CPU affinity mask
            "threads_note": "JAX has no thread setting; the worker's CPU affinity is the limit",
            "cpu_affinity": len(os.sched_getaffinity(0)),
            "backend": jax.default_backend(),
            "devices": ", ".join(str(d) for d in jax.devices()),
            "default_matmul_precision": jax.config.jax_default_matmul_precision,
            "enable_x64": bool(jax.config.jax_enable_x64),
            **env_flags("XLA_FLAGS", "JAX_PLATFORMS", "XLA_PYTHON_CLIENT_PREALLOCATE"),
        }

    def build(self, workload: Workload, params: dict[str, np.ndarray], data: Dataset, mode: str) -> Trainer:
        check_build(self, workload, mode)
        return JaxTrainer(workload, params, data, mode)
