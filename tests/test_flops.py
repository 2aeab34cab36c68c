"""FLOP counts from the neutral spec: exact hand counts on a tiny model, and PyTorch's own counter on the
built-in dense, conv and attention workloads (within 5%)."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from isobench.data import batches
from isobench.workloads import BUILTIN, SCALABLE, get_workload
from isobench.workloads.flops import count_flops, update_flops_per_param
from isobench.workloads.spec import (Conv2D, Dense, Dropout, GlobalAvgPool, OptimizerSpec, ReLU, Residual,
                                     Workload)

TINY = Workload(name="tiny", description="3-4-2 MLP", input_shape=(3,), num_classes=2,
                layers=(Dense(4, "a"), ReLU(), Dense(2, "b")), batch_size=5, epochs=2,
                optimizer=OptimizerSpec(kind="sgd"))


def test_tiny_dense_model_by_hand():
    c = count_flops(TINY, n_train=12, n_test=7)
    a, relu, b = c.layers
    # a: 2*3*4 forward; weight gradient only (nothing before it is trainable); bias 4 each way
    assert (a.matmul_forward, a.matmul_backward, a.other_forward, a.other_backward) == (24, 24, 4, 4)
    assert (relu.forward, relu.backward) == (4, 4)
    assert (b.matmul_forward, b.matmul_backward, b.other_forward, b.other_backward) == (16, 32, 2, 2)
    assert (c.loss_forward, c.loss_backward) == (8, 4)  # 2 logits x (4 | 2)
    assert c.params == 3 * 4 + 4 + 4 * 2 + 2 == 26
    assert (c.forward, c.backward, c.update) == (5 * 58, 5 * 70, 26 * 2)
    assert c.per_sample == 128 and c.per_step == 5 * 128 + 52 == 692
    assert c.matmul == 5 * (24 + 24 + 16 + 32)
    # 12 examples in batches of 5: 5, 5, 2
    assert (c.steps_per_epoch, c.last_batch, c.per_epoch) == (3, 2, 2 * 692 + 2 * 128 + 52)
    assert c.per_run == 2 * c.per_epoch
    assert c.eval_pass == 7 * (58 + 2)  # forward, loss, argmax over 2 logits
    # bytes (float32): 26 params x 5 (no optimizer state) + 5 x (3 inputs + 2 x (4 + 2) saved outputs)
    assert c.bytes_per_step == 4 * (26 * 5 + 5 * (3 + 2 * 6))
    assert c.intensity == pytest.approx(692 / 820)


def test_without_sizes_no_epoch_figures():
    c = count_flops(TINY)
    assert c.per_epoch is None and c.eval_pass is None and c.per_run is None and c.per_step == 692


@pytest.mark.parametrize("n_train", [1, 4, 5, 12, 15])
def test_epoch_follows_the_data_pipeline_batches(n_train):
    c = count_flops(TINY, n_train=n_train)
    assert c.per_epoch == sum(c.step(len(b)) for b in batches(np.arange(n_train), TINY.batch_size))


@pytest.mark.parametrize("spec, per_param", [
    (OptimizerSpec(kind="sgd"), 2), (OptimizerSpec(kind="sgd", momentum=0.9), 4),
    (OptimizerSpec(kind="sgd", momentum=0.9, nesterov=True), 6), (OptimizerSpec(kind="adam"), 14),
    (OptimizerSpec(kind="adamw", weight_decay=0.01), 16), (OptimizerSpec(kind="rmsprop"), 9),
    (OptimizerSpec(kind="adamw", clip_norm=1.0), 19)])
def test_update_per_parameter(spec, per_param):
    assert update_flops_per_param(spec) == per_param
    c = count_flops(dataclasses.replace(TINY, optimizer=spec))
    assert c.update == 26 * per_param


def test_every_update_rule_has_its_counts():
    from isobench.workloads import flops
    from isobench.workloads.spec import UPDATE_RULES

    assert set(flops._UPDATE) == set(flops._STATE_SLOTS) == set(UPDATE_RULES)


def test_unknown_optimizer_is_named():
    with pytest.raises(ValueError, match="lbfgs"):
        update_flops_per_param(OptimizerSpec(kind="lbfgs"))


def test_leading_layers_without_parameters_have_no_backward():
    w = dataclasses.replace(TINY, layers=(ReLU(), Dropout(0.5), Dense(2, "a")))
    relu, drop, a = count_flops(w).layers
    assert relu.backward == drop.backward == 0 and drop.other_forward == 6 and drop.eval_forward == 0
    assert a.matmul_backward == a.matmul_forward == 12


def test_residual_rows_and_strided_conv():
    w = Workload(name="r", description="", input_shape=(8, 8, 2), num_classes=3, batch_size=1, layers=(
        Conv2D(4, 3, "stem"),
        Residual((Conv2D(4, 3, "c", stride=2, padding=1),), shortcut=(Conv2D(4, 1, "s", stride=2, padding=0),)),
        GlobalAvgPool(), Dense(3, "head")))
    rows = count_flops(w).layers
    assert [r.path for r in rows] == ["layers[0]", "layers[1].block[0]", "layers[1].shortcut[0]", "layers[1]",
                                      "layers[2]", "layers[3]"]
    stem, c, s, add = rows[:4]
    assert stem.matmul_forward == 2 * 8 * 8 * 4 * 9 * 2 and stem.matmul_backward == stem.matmul_forward
    assert c.matmul_forward == 2 * 4 * 4 * 4 * 9 * 4 and c.matmul_backward == 2 * c.matmul_forward
    assert s.matmul_forward == 2 * 4 * 4 * 4 * 4
    assert (add.other_forward, add.other_backward) == (4 * 4 * 4, 8 * 8 * 4)


def test_every_builtin_workload_is_counted():
    for w in BUILTIN.values():
        c = count_flops(w, n_train=1000, n_test=100)
        assert 0 < c.matmul < c.per_step < c.per_epoch and c.eval_pass > 0 and c.bytes_per_step > 0


def _torch_counted(w) -> tuple[int, int]:
    """(torch.utils.flop_counter's count of one eager training step, ours): attention runs on SDPA's math path,
    whose matmuls the counter sees (its fused CPU kernel is not in the counter's registry)."""
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    from isobench.backends import get_backend
    from isobench.data import load_dataset
    from isobench.workloads import init_params

    data = load_dataset(w)
    backend = get_backend("torch")
    backend.setup(1)
    trainer = backend.build(w, init_params(w), data, "eager")
    idx = np.arange(w.batch_size)
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        trainer.train_step(idx, w.optimizer.learning_rate)
    assert isinstance(trainer.model, torch.nn.Module)
    return counter.get_total_flops(), count_flops(w).matmul


@pytest.mark.slow
@pytest.mark.parametrize("name", ["seed-mlp", "lenet5", "resnet-mini", "gpt-tiny", "vit-digits"])
def test_matmul_count_matches_torch_flop_counter(name):
    pytest.importorskip("torch")
    theirs, ours = _torch_counted(get_workload(name))
    assert theirs > 0
    assert abs(ours - theirs) <= 0.05 * theirs, (ours, theirs)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SCALABLE))
def test_compute_bound_matmul_count_matches_torch_flop_counter_at_a_small_scale(name):
    """resnet18, gpt2-small, bert-base at scale 1/8: every layer type of the full model, counted in seconds."""
    pytest.importorskip("torch")
    theirs, ours = _torch_counted(SCALABLE[name](0.125))
    assert theirs > 0
    assert abs(ours - theirs) <= 0.05 * theirs, (ours, theirs)
