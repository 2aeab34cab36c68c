"""Keras 3 on torch, TensorFlow and JAX against the float64 numpy reference.

Keras picks its backend once per process, so every check that imports keras runs in a child process:
this file run as a script (``python tests/test_keras_backend.py FRAMEWORK WORKLOAD...``) measures the
differences and prints them as JSON; the tests hold them to the workload's tolerances."""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest

from isobench.backends import DEFAULT_FRAMEWORKS, REGISTRY, get_backend

KERAS = ("keras-torch", "keras-tensorflow", "keras-jax")
STEPS = 4
# optimizer forms Keras writes differently from the spec, tried on seed-mlp (see keras_backend's docstring)
OPTIMIZER_VARIANTS = {
    "rmsprop": ({"kind": "rmsprop", "learning_rate": 1e-3}, {}),
    "sgd-nesterov-cosine": ({"kind": "sgd", "learning_rate": 0.05, "momentum": 0.9, "nesterov": True},
                            {"kind": "cosine", "warmup_steps": 3}),
    "adamw-clipped": ({"kind": "adamw", "learning_rate": 1e-2, "weight_decay": 0.1, "clip_norm": 0.05}, {}),
}


def _installed(framework: str) -> bool:
    from importlib.util import find_spec

    return all(find_spec(m) is not None for m in get_backend(framework).requires)


def _child(framework: str, workload_names: list[str]) -> dict:
    """Runs in a fresh process: the largest differences from the reference per workload (``NAME@VARIANT``:
    seed-mlp in a mixed precision or with one of OPTIMIZER_VARIANTS, or a workload with Keras's own optimizer
    classes, ``@library``)."""
    from isobench.backends.reference import ReferenceTrainer
    from isobench.data import batches, epoch_orders, load_dataset
    from isobench.workloads import get_workload, init_params
    from isobench.workloads.schedule import learning_rates
    from isobench.workloads.spec import OptimizerSpec, ScheduleSpec

    def max_abs(a, b, names=None):
        assert set(a) == set(b), set(a) ^ set(b)
        return max(float(np.max(np.abs(np.asarray(a[k], np.float64) - b[k]))) for k in (names or a))

    def compare(w, precision="fp32", optimizer="neutral"):
        data = load_dataset(w)
        orders = epoch_orders(len(data.x_train), w.epochs, w.seed)
        lrs = learning_rates(w.optimizer, w.schedule, w.epochs * w.steps_per_epoch(len(data.x_train)))
        params = init_params(w)
        ref = ReferenceTrainer(w, params, data)
        idx = batches(orders[0], w.batch_size)[:STEPS]
        trainer = backend.build(w, params, data, "fit", precision, optimizer=optimizer)
        out = {"load": max_abs(trainer.params(), params)}
        logits = trainer.logits(data.x_test[:64])
        out["logits_dtype"] = str(logits.dtype)
        out["logits"] = float(np.max(np.abs(logits - ref.logits(data.x_test[:64]))))
        ref_grads = ref.gradients(idx[0])
        out["grads"] = max_abs(trainer.gradients(idx[0]), ref_grads)
        out["probe_changes"] = max_abs(trainer.params(), params)
        losses = [trainer.train_step(i, lrs[s]) for s, i in enumerate(idx)]
        out["loss"] = float(np.max(np.abs(np.array(losses) - [ref.train_step(i, lrs[s]) for s, i in enumerate(idx)])))
        after, expected = trainer.params(), ref.params()
        moving = [k for k, g in ref_grads.items() if np.max(np.abs(g)) > 1e-9]  # see test_zoo_backends
        out["params"] = max_abs(after, expected, moving)
        state = list(w.state_shapes())
        out["state"] = max_abs(after, expected, state) if state else 0.0
        (loss, acc), (ref_loss, ref_acc) = trainer.evaluate(), ref.evaluate()
        out["eval_loss"] = abs(loss - ref_loss)
        out["eval_mismatches"] = round(abs(acc - ref_acc) * data.y_test.size)  # test predictions that differ
        return out

    backend = get_backend(framework)
    settings = backend.setup(1)
    results = {}
    for key in workload_names:
        name, _, variant = key.partition("@")
        w = get_workload(name).without_dropout()
        if variant in OPTIMIZER_VARIANTS:
            opt, sched = OPTIMIZER_VARIANTS[variant]
            w = dataclasses.replace(w, optimizer=OptimizerSpec(**opt), schedule=ScheduleSpec(**sched))
        results[key] = compare(w, variant if variant in ("bf16", "fp16") else "fp32",
                               "library" if variant == "library" else "neutral")
    other = next(f for f in ("keras-torch", "keras-jax") if f != framework)
    try:  # keras is imported now: another Keras backend cannot start in this process
        get_backend(other).setup(1)
        switch_error = None
    except RuntimeError as e:
        switch_error = str(e)
    return {"settings": {"keras_backend": settings.extra["keras_backend"], "jit_compile": settings.xla["jit_compile"],
                         "tf32": settings.tf32, "device": settings.device,
                         "framework": settings.companions[framework.split("-", 1)[1]] is not None},
            "results": results, "switch_error": switch_error}


def _run_child(*args: str, timeout: float = 300) -> dict:
    proc = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_registered_as_three_frameworks_outside_the_defaults():
    names = list(REGISTRY)
    assert names[names.index("jax") + 1:names.index("numpy")] == list(KERAS)
    assert not set(KERAS) & set(DEFAULT_FRAMEWORKS)
    for name in KERAS:
        b = get_backend(name)
        assert (b.name, b.import_name, b.modes, b.precisions) == (name, "keras", ("fit",), ("fp32", "bf16", "fp16"))
        assert b.requires == ("keras", name.split("-", 1)[1]) and "isobench[" in b.install_hint


def test_importing_the_backend_imports_no_framework():
    code = ("import sys, isobench.backends.keras_backend; "
            "print(sorted(m for m in ('keras', 'torch', 'tensorflow', 'jax') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "[]", out.stderr[-2000:]


def test_device_peak_is_the_plain_backends_window(monkeypatch):
    """keras-torch resets and reads the GPU allocator peak through the torch backend's functions (synchronised,
    from the end of build), so torch and keras-torch measure the same window."""
    pytest.importorskip("torch")
    from isobench.backends import keras_backend, torch_backend

    calls = []
    monkeypatch.setattr(torch_backend, "reset_cuda_peak", lambda cuda: calls.append("reset"))
    monkeypatch.setattr(torch_backend, "cuda_peak_bytes", lambda cuda: calls.append("read") or 4096)
    keras_backend._reset_peak("torch")
    assert keras_backend._device_peak("torch") == 4096 and calls == ["reset", "read"]
    assert set(keras_backend._SETUP) == {"torch", "tensorflow", "jax"}
    assert keras_backend._SETUP["tensorflow"] is keras_backend.tf_backend.setup_tensorflow


@pytest.mark.parametrize("framework,missing", [("keras-tensorflow", "tensorflow"), ("keras-jax", "keras")])
def test_missing_framework_or_keras_is_an_import_error(framework, missing):
    """The worker turns an ImportError from setup() into status 'unavailable'."""
    code = (f"import sys; sys.modules[{missing!r}] = None\n"  # makes `import {missing}` raise ImportError
            "from isobench.backends import get_backend\n"
            f"try:\n    get_backend({framework!r}).setup(1)\nexcept ImportError as e:\n    print('ImportError')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip().splitlines()[-1:] == ["ImportError"], out.stderr[-2000:]


# each framework on seed-mlp and one more workload, spread so the three cover attention, BatchNorm and LSTM
# (the slowest-to-compile workload goes to the eager one), plus one mixed precision or optimizer variant each, and
# the library optimizers (Keras's own classes: SGD as the spec's, Adam with its own epsilon on lstm-digits)
CASES = {"keras-torch": ("seed-mlp", "gpt-tiny", "seed-mlp@fp16", "seed-mlp@rmsprop", "seed-mlp@library"),
         "keras-tensorflow": ("seed-mlp", "resnet-mini", "seed-mlp@bf16", "seed-mlp@sgd-nesterov-cosine",
                              "seed-mlp@library"),
         "keras-jax": ("seed-mlp", "lstm-digits", "seed-mlp@adamw-clipped", "lstm-digits@library")}
JIT_AUTO = {"keras-torch": False, "keras-tensorflow": False, "keras-jax": True}  # Keras's "auto" on a CPU


@pytest.mark.slow
@pytest.mark.parametrize("framework", KERAS)
def test_keras_matches_the_reference(framework):
    if not _installed(framework):
        pytest.skip(f"{framework} needs {get_backend(framework).requires}")
    from isobench.workloads import get_workload

    out = _run_child(framework, *CASES[framework])
    assert out["settings"] == {"keras_backend": framework.split("-", 1)[1], "jit_compile": JIT_AUTO[framework],
                               "tf32": False, "device": "cpu", "framework": True}
    assert "fresh process" in out["switch_error"]
    for key, r in out["results"].items():
        name, _, variant = key.partition("@")
        precision = variant if variant in ("bf16", "fp16") else "fp32"
        tol = get_workload(name).parity.for_precision(precision)
        own_rule = variant == "library" and get_backend(framework).library_difference(get_workload(name))
        tol = tol.for_library() if own_rule else tol  # Keras's Adam: its epsilon steps the LSTM's near-zero
        # gradients up to twice as far, so its parameters are not held to 1e-4 (keras_backend's docstring)
        assert r["load"] == 0.0 and r["probe_changes"] == 0.0, key  # exact load; the probe changes nothing
        assert r["logits_dtype"] == "float32", key
        assert r["logits"] <= tol.forward_atol and r["loss"] <= tol.loss_atol, (key, r)
        assert r["state"] <= tol.state_atol and r["eval_loss"] <= tol.epoch_loss_atol, (key, r)
        if precision == "fp32":  # mixed precision: ReLU sign flips move single gradients beyond the floors
            assert r["grads"] <= tol.grad_atol and (own_rule or r["params"] <= 1e-4), (key, r)
            assert r["eval_mismatches"] <= 2, (key, r)  # at most 2 argmax near-ties


if __name__ == "__main__":
    print(json.dumps(_child(sys.argv[1], sys.argv[2:])))
