"""The compute-bound workloads (resnet18, gpt2-small, bert-base): their full-scale definition, what --scale does to
them, their synthetic data, the FLOPs listing, and (slow) parity in the three frameworks at the parity scale."""
from __future__ import annotations

from math import log

import numpy as np
import pytest

from isobench.backends import DEFAULT_FRAMEWORKS, get_backend, installed_frameworks
from isobench.cli import main
from isobench.config import COMPUTE_PARITY_SCALE, parity_scale, resolve_workload
from isobench.data import load_dataset, split_sizes
from isobench.errors import UserError
from isobench.workloads import BUILTIN, SCALABLE, get_workload
from isobench.workloads.spec import Conv2D, Dense, Embedding, MultiHeadSelfAttention, iter_layers


def _widths(w) -> list[int]:
    return [l.filters for l in iter_layers(w.layers) if isinstance(l, Conv2D) and l.kernel_size == 3]


def _blocks(w) -> int:
    return sum(isinstance(l, MultiHeadSelfAttention) for l in iter_layers(w.layers))


def test_full_scale_is_the_named_class_of_model():
    r = BUILTIN["resnet18"]
    assert r.input_shape == (224, 224, 3) and r.num_classes == 1000 and r.output_shape() == (1000,)
    assert sorted(set(_widths(r))) == [64, 128, 256, 512] and len(_widths(r)) == 16  # 8 BasicBlocks x 2 convs
    assert 11.6e6 < sum(np.prod(s) for s in r.param_shapes().values()) < 11.8e6  # torchvision's: 11.69M
    g = BUILTIN["gpt2-small"]
    assert g.input_shape == (256,) and g.num_classes == 50257 and _blocks(g) == 12
    assert all(a.causal and a.num_heads == 12 for a in iter_layers(g.layers) if isinstance(a, MultiHeadSelfAttention))
    assert {l.units for l in iter_layers(g.layers) if isinstance(l, Dense)} == {768 * 4, 768, 50257}  # 4x MLP
    b = BUILTIN["bert-base"]
    assert b.input_shape == (128,) and b.num_classes == 2 and _blocks(b) == 12 and b.output_shape() == (2,)
    assert not any(a.causal for a in iter_layers(b.layers) if isinstance(a, MultiHeadSelfAttention))
    assert next(iter_layers(b.layers)) == Embedding(30522, 768, "embed")


def test_scale_shrinks_widths_depth_input_vocab_and_data_together():
    r = SCALABLE["resnet18"](0.0625)
    assert sorted(set(_widths(r))) == [4, 8, 16, 32] and len(_widths(r)) == 8  # 1 block per stage
    assert r.input_shape == (32, 32, 3) and r.num_classes == 62 and split_sizes(r) == (64, 16)
    g = SCALABLE["gpt2-small"](0.0625)
    assert g.input_shape == (16,) and g.num_classes == 3141 and _blocks(g) == 1 and split_sizes(g) == (32, 8)
    assert next(iter_layers(g.layers)).dim == 48  # 12 heads of width round(64 x 0.0625)
    b = SCALABLE["bert-base"](0.5)
    assert b.input_shape == (64,) and _blocks(b) == 6 and next(iter_layers(b.layers)).dim == 384
    for build in SCALABLE.values():  # batch, optimizer and epochs do not change with the scale
        small, full = build(0.25), build(1.0)
        assert (small.batch_size, small.optimizer, small.epochs) == (full.batch_size, full.optimizer, full.epochs)
        assert small.name == full.name and "[scale 0.25]" in small.description
        assert full == BUILTIN[full.name]


def test_scale_resolution_and_the_parity_scale():
    assert resolve_workload("gpt2-small", scale=0.25) == SCALABLE["gpt2-small"](0.25)
    assert resolve_workload("gpt2-small") == BUILTIN["gpt2-small"]
    with pytest.raises(UserError, match="0 < F <= 1"):
        resolve_workload("bert-base", scale=2.0)
    assert resolve_workload("gpt-tiny", scale=2.0).data.n_train == 2 * get_workload("gpt-tiny").data.n_train
    assert parity_scale("resnet18", None) == COMPUTE_PARITY_SCALE == parity_scale("resnet18", 0.5)
    assert parity_scale("resnet18", 0.01) == 0.01 and parity_scale("resnet-mini", 0.5) is None


def test_synthetic_token_classes_are_seeded_and_class_dependent():
    w = SCALABLE["bert-base"](0.0625)
    d = load_dataset(w)
    assert d.x_train.shape == (64, 8) and d.x_train.dtype == np.int32 and d.y_train.shape == (64,)
    assert set(np.unique(d.y_train)) == {0, 1} and d.x_train.max() < w.data.vocab
    again = load_dataset(w)
    assert np.array_equal(again.x_train, d.x_train) and np.array_equal(again.y_test, d.y_test)
    # the same token is followed by different successors in the two classes' chains
    x, y = np.concatenate([d.x_train, d.x_test]), np.concatenate([d.y_train, d.y_test])
    pairs = [{(a, b) for row in x[y == k] for a, b in zip(row[:-1], row[1:])} for k in (0, 1)]
    assert len(pairs[0] & pairs[1]) < 0.1 * min(map(len, pairs))


def test_list_flops_shows_full_scale_and_the_given_scale(capsys):
    assert main(["list", "--flops", "--scale", "0.0625"]) == 0
    lines = capsys.readouterr().out.splitlines()
    for name in SCALABLE:
        assert any(l.startswith(f"{name} ") for l in lines) and any(l.startswith(f"{name}@0.0625 ") for l in lines)
    gpt = next(l for l in lines if l.startswith("gpt2-small "))
    assert "TFLOP" in gpt.split()[1] + gpt.split()[2]  # a full-scale step is over a TFLOP
    assert main(["list", "--scale", "0.5"]) == 2


def test_targets_state_only_learning_something():
    g = BUILTIN["gpt2-small"]
    assert g.metric == "loss" and g.target == pytest.approx(log(50257))
    assert BUILTIN["resnet18"].target == pytest.approx(2 / 1000)


@pytest.mark.slow
@pytest.mark.skipif(len(installed_frameworks()) < len(DEFAULT_FRAMEWORKS), reason="needs torch, tensorflow and jax")
@pytest.mark.parametrize("name", sorted(SCALABLE))
def test_parity_at_the_parity_scale_in_three_frameworks(name):
    from isobench.runner.parity import run_parity

    report = run_parity(name, [(f, get_backend(f).modes[0]) for f in DEFAULT_FRAMEWORKS], threads=1)
    assert report.passed, [(f.framework, f.status, f.error, [c for c in f.checks if not c.passed])
                           for f in report.frameworks] + [c for c in report.cross if not c.passed]
    assert any(n.startswith(f"checked at scale {COMPUTE_PARITY_SCALE:g}") for n in report.notes)


def test_tf32_is_a_gpu_precision(capsys):
    assert main(["run", "seed-mlp", "--precision", "tf32", "--no-store"]) == 2
    assert "--precision tf32 needs --device cuda" in capsys.readouterr().err
    assert main(["parity", "seed-mlp", "--precision", "fp32,tf32"]) == 2


@pytest.mark.slow
@pytest.mark.parametrize("framework", DEFAULT_FRAMEWORKS)
def test_tf32_precision_turns_tf32_on_and_fp32_turns_it_off(framework):
    """On the CPU the flags change nothing; on a GPU they route float32 matmuls to TF32 tensor cores."""
    from isobench.workloads import init_params

    backend = get_backend(framework)
    if framework not in installed_frameworks():
        pytest.skip(f"{framework} is not installed")
    settings = backend.setup(1)
    w = get_workload("seed-mlp")
    data, params = load_dataset(w), init_params(w)

    def tf32_on() -> bool:
        if framework == "torch":
            import torch
            return torch.backends.cuda.matmul.allow_tf32 and torch.get_float32_matmul_precision() == "high"
        if framework == "tensorflow":
            import tensorflow as tf
            return tf.config.experimental.tensor_float_32_execution_enabled()
        import jax
        return jax.config.jax_default_matmul_precision == "tensorfloat32"

    trainer = backend.build(w, params, data, backend.modes[0], "tf32")
    assert tf32_on() and settings.tf32 is True  # the record the worker stores says so
    assert trainer.train_step(np.arange(w.batch_size), 0.01) > 0
    backend.build(w, params, data, backend.modes[0], "fp32")
    assert not tf32_on() and settings.tf32 is False
