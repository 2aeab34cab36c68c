"""Zoo plumbing without frameworks: the reference's backward, data readers on files in the real formats,
TOML workloads and their validation, schedules, time to target."""
import gzip
import json
import pickle
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from isobench.backends.reference import Model, Optimizer, softmax_xent
from isobench.data import load_dataset, scaled
from isobench.data.formats import read_cifar10, read_idx
from isobench.errors import UserError
from isobench.workloads import get_workload, list_workloads, load_toml, workload_from_dict, workload_to_dict
from isobench.workloads.schedule import learning_rates
from isobench.workloads.spec import (LSTM, OPTIMIZER_KINDS, AvgPool2D, BatchNorm, Conv2D, Dense, Embedding, Flatten,
                                     GELU, GlobalAvgPool, LayerNorm, MaxPool2D, MultiHeadSelfAttention, OptimizerSpec,
                                     PositionalEmbedding, ReLU, Reshape, Residual, ScheduleSpec, Tanh, Workload)

RNG = np.random.default_rng(0)


@pytest.mark.parametrize("layers,in_shape,x,classes", [
    ([Conv2D(3, 3, "c"), BatchNorm("bn"), ReLU(), Conv2D(4, 3, "c2", stride=2, padding=1), MaxPool2D(2), Flatten(),
      Dense(5, "d")], (8, 8, 2), RNG.normal(size=(4, 8, 8, 2)), 5),
    ([Residual((Conv2D(2, 3, "c"), BatchNorm("b1"), ReLU(), Conv2D(2, 3, "c2"))), AvgPool2D(2), GlobalAvgPool(),
      Dense(3, "d")], (6, 6, 2), RNG.normal(size=(4, 6, 6, 2)), 3),
    ([LSTM(5, "l", return_sequences=True), LSTM(4, "l2"), Tanh(), Dense(3, "d")], (6, 3), RNG.normal(size=(4, 6, 3)), 3),
    ([Embedding(7, 8, "e"), PositionalEmbedding(6, "pe"), Residual((LayerNorm("ln"), MultiHeadSelfAttention(2, "a", causal=True))),
      Residual((LayerNorm("ln2"), Dense(16, "f1"), GELU(), Dense(8, "f2"))), Dense(7, "out")], (5,), RNG.integers(0, 7, (4, 5)), 7),
    ([Reshape((4, 4, 1)), Conv2D(6, 2, "p", stride=2, padding=0), Reshape((4, 6)), MultiHeadSelfAttention(3, "a"),
      GlobalAvgPool(), Dense(3, "d")], (16,), RNG.normal(size=(4, 16)), 3),
], ids=["cnn-bn", "residual", "lstm", "gpt", "vit"])
def test_reference_backward_matches_finite_differences(layers, in_shape, x, classes):
    w = Workload("t", "t", in_shape, classes, tuple(layers))
    p = {k: RNG.normal(0, 0.5, s) for k, s in w.param_shapes().items()}
    state = {k: np.ones(s) if k.endswith("var") else np.zeros(s) for k, s in w.state_shapes().items()}
    y = RNG.integers(0, classes, x.shape[:1] + w.output_shape()[:-1])
    m = Model(w.layers, p, dict(state))
    m.train = True

    def loss():
        m.s = dict(state)
        return softmax_xent(m.forward(x, True)[0], y)[0]

    out, caches = m.forward(x, True)
    grads = m.backward(caches, softmax_xent(out, y)[1])
    for name, value in p.items():
        for _ in range(3):
            i = tuple(RNG.integers(0, n) for n in value.shape)
            old = value[i]
            value[i] = old + 1e-6
            up = loss()
            value[i] = old - 1e-6
            down = loss()
            value[i] = old
            assert abs((up - down) / 2e-6 - grads[name][i]) < 1e-6, name


def test_optimizer_rules_by_hand():
    g = {"w": np.array([0.5, -2.0])}
    p = {"w": np.array([1.0, 1.0])}
    Optimizer(OptimizerSpec(kind="adam", learning_rate=0.1, epsilon=1e-8), p).step(p, g, 0.1)
    assert np.allclose(p["w"], [0.9, 1.1])  # first Adam step moves every weight by lr * sign(g)
    p = {"w": np.array([1.0, 1.0])}
    Optimizer(OptimizerSpec(kind="adamw", learning_rate=0.1, weight_decay=0.5), p).step(p, g, 0.1)
    assert np.allclose(p["w"], [0.95 - 0.1, 0.95 + 0.1])
    p = {"w": np.array([1.0, 1.0])}
    Optimizer(OptimizerSpec(kind="sgd", clip_norm=1.0), p).step(p, g, 1.0)
    norm = np.sqrt(0.25 + 4.0)
    assert np.allclose(p["w"], 1.0 - g["w"] / (norm + 1e-6))
    p = {"w": np.array([1.0, 1.0])}
    Optimizer(OptimizerSpec(kind="rmsprop", rho=0.9, epsilon=0.0), p).step(p, g, 0.01)
    assert np.allclose(p["w"], 1.0 - 0.01 * np.sign(g["w"]) / np.sqrt(0.1))


def test_schedules():
    opt = OptimizerSpec(learning_rate=1.0)
    assert np.allclose(learning_rates(opt, ScheduleSpec(), 3), 1.0)
    assert np.allclose(learning_rates(opt, ScheduleSpec(kind="step", step_size=2, gamma=0.5), 5), [1, 1, .5, .5, .25])
    warm = learning_rates(opt, ScheduleSpec(kind="cosine", warmup_steps=4, min_lr=0.1), 14)
    assert np.allclose(warm[:4], [0.25, 0.5, 0.75, 1.0]) and warm[4] == pytest.approx(1.0)
    assert warm[-1] == pytest.approx(0.1) and np.all(np.diff(warm[4:]) <= 0)


def test_every_builtin_round_trips_and_has_a_target_and_band():
    for w in list_workloads():
        assert workload_from_dict(json.loads(json.dumps(workload_to_dict(w)))) == w
        assert w.target is not None and w.accuracy_band[0] < w.accuracy_band[1]
        assert w.description and w.output_shape()[-1] == w.num_classes


# ---- data files in their real formats -------------------------------------------------------------

def _write_idx(path, array, gz):
    codes = {np.uint8: 0x08}
    header = bytes([0, 0, codes[array.dtype.type], array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    (gzip.open if gz else open)(path, "wb").write(header + array.tobytes())


@pytest.fixture
def mnist_dir(tmp_path):
    rng = np.random.default_rng(1)
    for part, n, gz in (("train", 64, True), ("t10k", 16, False)):
        suffix = ".gz" if gz else ""
        _write_idx(tmp_path / f"{part}-images-idx3-ubyte{suffix}", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), gz)
        _write_idx(tmp_path / f"{part}-labels-idx1-ubyte{suffix}", rng.integers(0, 10, n).astype(np.uint8), gz)
    return tmp_path


def test_mnist_idx_reader_and_lenet5_on_it(mnist_dir):
    raw = read_idx(mnist_dir / "t10k-images-idx3-ubyte")
    assert raw.shape == (16, 28, 28) and raw.dtype == np.uint8
    from isobench.config import resolve_workload
    w = resolve_workload("lenet5", data_dir=str(mnist_dir))
    assert w.data.source == "mnist"
    d = load_dataset(w, mnist_dir)
    assert d.x_train.shape == (64, 28, 28, 1) and d.x_test.shape == (16, 28, 28, 1)
    assert np.allclose(d.x_test[..., 0], raw / 255.0) and d.x_train.max() <= 1.0


@pytest.mark.parametrize("damage,message", [
    (lambda d: (d / "t10k-labels-idx1-ubyte").unlink(), "missing t10k-labels-idx1-ubyte"),
    (lambda d: (d / "t10k-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03\x00"), "truncated IDX header"),
    (lambda d: (d / "t10k-images-idx3-ubyte").write_bytes(b"PK\x03\x04junk"), "is not an IDX file"),
    (lambda d: (d / "t10k-images-idx3-ubyte").write_bytes(
        bytes([0, 0, 8, 3]) + struct.pack(">III", 16, 28, 28) + b"\x00" * 10), "promises (16, 28, 28)"),
    (lambda d: (d / "train-images-idx3-ubyte.gz").write_bytes(b"not gzip"), "cannot read"),
])
def test_malformed_mnist_files_are_one_line_errors(mnist_dir, damage, message):
    damage(mnist_dir)
    w = workload_from_dict({**workload_to_dict(get_workload("lenet5")), "data": {"source": "mnist", "image_size": 28}})
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_dataset(w, mnist_dir)


def _cifar_batch(path, n, rng):
    data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    with open(path, "wb") as f:
        pickle.dump({b"data": data, b"labels": list(rng.integers(0, 10, n)), b"batch_label": b"x"}, f)
    return data


def test_cifar10_reader_keeps_channels_in_order(tmp_path):
    rng = np.random.default_rng(2)
    train = _cifar_batch(tmp_path / "data_batch_1", 20, rng)
    _cifar_batch(tmp_path / "test_batch", 8, rng)
    (xtr, ytr), (xte, yte) = read_cifar10(tmp_path)
    assert xtr.shape == (20, 32, 32, 3) and len(ytr) == 20 and xte.shape == (8, 32, 32, 3)
    # pixel (row 1, col 2) of image 0: red at 32*1+2, green 1024 later, blue 2048 later
    assert list(xtr[0, 1, 2]) == [train[0, 34], train[0, 1024 + 34], train[0, 2048 + 34]]
    from isobench.config import resolve_workload
    d = load_dataset(resolve_workload("resnet-mini", data_dir=str(tmp_path)), tmp_path)
    assert d.x_train.shape == (20, 32, 32, 3) and d.x_train.max() <= 1.0


def test_cifar10_reader_refuses_code_in_pickles(tmp_path):
    class Evil:
        def __reduce__(self):
            return (eval, ("1",))  # not print: an imported Ray replaces builtins.print
    (tmp_path / "data_batch_1").write_bytes(pickle.dumps({b"data": Evil(), b"labels": []}))
    (tmp_path / "test_batch").write_bytes(b"")
    with pytest.raises(UserError, match="refusing to load builtins.eval"):
        read_cifar10(tmp_path)


def test_synthetic_data_scales_and_is_learnable_shape():
    w = get_workload("resnet-mini")
    d = load_dataset(w)
    assert d.x_train.shape == (768, 32, 32, 3) and d.x_test.shape == (256, 32, 32, 3)
    big = load_dataset(scaled(w, 2.0))
    assert big.x_train.shape[0] == 1536
    tokens = load_dataset(get_workload("gpt-tiny"))
    assert tokens.x_train.dtype == np.int32 and tokens.x_train.shape == (2048, 16)
    assert np.array_equal(tokens.x_train[:, 1:], tokens.y_train[:, :-1])  # next-token targets
    with pytest.raises(UserError, match="--scale applies to synthetic data"):
        scaled(get_workload("seed-mlp"), 2.0)


# ---- TOML workloads --------------------------------------------------------------------------------

def test_example_toml_workloads_load():
    cnn = load_toml("examples/small-cnn.toml")
    assert cnn.output_shape() == (10,) and "conv2d_0/kernel" in cnn.param_shapes()
    mlp = load_toml("examples/residual-mlp.toml")
    assert mlp.optimizer.kind == "rmsprop" and mlp.optimizer.clip_norm == 1.0 and mlp.has_dropout()


def test_the_documented_optimizer_kinds_are_the_spec_list():
    docs = (Path(__file__).resolve().parents[1] / "docs" / "workloads.md").read_text()
    assert f"`kind` = {' | '.join(OPTIMIZER_KINDS)}," in docs


BASE = 'name = "t"\ninput_shape = [64]\nnum_classes = 10\n'


@pytest.mark.parametrize("text,message", [
    (BASE + "epochs = 'ten'\n[[layers]]\nkind='dense'\nunits=10\n", "epochs: expected a whole number, got 'ten'"),
    (BASE + "[[layers]]\nkind='dense'\nunits=10\n[optimizer]\nkind='adagrad'\n",
     "optimizer.kind: 'adagrad' is not one of: sgd, adam, adamw, rmsprop, dp-sgd"),
    (BASE + "[[layers]]\nkind='dense'\nunits=32\n[[layers]]\nkind='convolution'\n",
     "layers[1].kind: unknown layer 'convolution'"),
    (BASE + "[[layers]]\nkind='dense'\nunits=32\n[[layers]]\nkind='conv2d'\nfilters=4\nkernel_size=3\n",
     "layers[1]: conv2d needs an image (H, W, C) input, got shape (32,)"),
    (BASE + "[[layers]]\nkind='dense'\nunits=12\n", "the model ends with 12 outputs but num_classes is 10"),
    (BASE + "[[layers]]\nkind='dense'\nunits=10\nsize=3\n", "layers[0]: unknown field 'size'"),
    (BASE + "batch_size = 0\n[[layers]]\nkind='dense'\nunits=10\n", "batch_size: must be at least 1, got 0"),
    (BASE + "[[layers]]\nkind='residual'\nblock=[{kind='dense', units=5}]\n[[layers]]\nkind='dense'\nunits=10\n",
     "layers[0]: residual block gives (5,) but the shortcut gives (64,)"),
    (BASE + "[[layers]]\nkind='dense'\nunits=10\n[data]\nsource='imagenet'\n", "data.source: 'imagenet' is not one of"),
    ("name = [unclosed\n", "not valid TOML"),
])
def test_bad_toml_names_the_field(tmp_path, text, message):
    path = tmp_path / "w.toml"
    path.write_text(text)
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        load_toml(path)


def test_bad_toml_on_the_command_line_is_one_line_exit_2_before_any_worker(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text(BASE + "[[layers]]\nkind='lstm'\nunits=8\n")
    p = subprocess.run([sys.executable, "-m", "isobench", "run", str(path), "--frameworks", "numpy"],
                       capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert p.returncode == 2 and "layers[0]: lstm needs a sequence (T, features) input" in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and "worker" not in p.stderr
