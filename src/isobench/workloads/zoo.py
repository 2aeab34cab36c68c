"""Built-in workloads. Each states its data, model, optimizer, batch, epochs, the test metric a correct
implementation reaches (a band checked in the tests) and a time-to-target threshold. Parity tolerances
are absolute, float32 frameworks against the float64 numpy reference, measured with margin (see docs)."""
from __future__ import annotations

from dataclasses import replace
from math import log
from typing import Callable

from .spec import (BatchNorm, Conv2D, DataSpec, Dense, Dropout, Embedding, Flatten, GELU, GlobalAvgPool, LayerNorm,
                   LSTM, MaxPool2D, MultiHeadSelfAttention, OptimizerSpec, ParitySpec, PositionalEmbedding, ReLU,
                   Reshape, Residual, ScheduleSpec, Workload)


def _encoder_block(i: int, width: int, heads: int, causal: bool = False,
                   mlp_ratio: int = 2) -> tuple:
    """Pre-norm Transformer block: x + attention(LN(x)), then x + MLP(LN(x)) with a ``mlp_ratio`` x GELU MLP (2 in
    the small built-ins, 4 in GPT-2 and BERT)."""
    return (Residual((LayerNorm(f"block_{i}/ln_0"), MultiHeadSelfAttention(heads, f"block_{i}/attention",
                                                                           causal=causal))),
            Residual((LayerNorm(f"block_{i}/ln_1"), Dense(mlp_ratio * width, f"block_{i}/mlp_0"), GELU(),
                      Dense(width, f"block_{i}/mlp_1"))))


def _conv_bn(name: str, filters: int, stride: int = 1) -> tuple:
    pad = "same" if stride == 1 else 1
    return (Conv2D(filters, 3, f"{name}/conv", stride=stride, padding=pad), BatchNorm(f"{name}/bn"))


SEED_MLP = Workload(
    name="seed-mlp",
    description="MLP 64-128-64-10 (ReLU) on scikit-learn digits, SGD lr 0.01, batch 32, 10 epochs",
    input_shape=(64,),
    num_classes=10,
    layers=(Dense(128, "dense_0"), ReLU(), Dense(64, "dense_1"), ReLU(), Dense(10, "dense_2")),
    data=DataSpec(source="digits"),
    optimizer=OptimizerSpec(kind="sgd", learning_rate=0.01),
    batch_size=32, epochs=10,
    parity=ParitySpec(epochs=None),
    target=0.80, accuracy_band=(0.80, 1.0),
)

LENET5 = Workload(
    name="lenet5",
    description="LeNet-5 CNN on digits upsampled to 28x28 (MNIST with --data-dir), SGD momentum 0.9, batch 32, 4 epochs",
    input_shape=(28, 28, 1),
    num_classes=10,
    layers=(Conv2D(6, 5, "conv_0", padding="same"), ReLU(), MaxPool2D(2),
            Conv2D(16, 5, "conv_1", padding="valid"), ReLU(), MaxPool2D(2), Flatten(),
            Dense(120, "dense_0"), ReLU(), Dense(84, "dense_1"), ReLU(), Dense(10, "dense_2")),
    data=DataSpec(source="digits", dir_source="mnist", image_size=28),
    optimizer=OptimizerSpec(kind="sgd", learning_rate=0.01, momentum=0.9),
    batch_size=32, epochs=4,
    target=0.90, accuracy_band=(0.90, 1.0),
)

RESNET_MINI = Workload(
    name="resnet-mini",
    description="Small ResNet (3 conv-BN blocks, 2 residual, stride-2 shortcut) on synthetic 32x32x3 images "
                "(CIFAR-10 with --data-dir), SGD 0.05 momentum 0.9, batch 64, 4 epochs",
    input_shape=(32, 32, 3),
    num_classes=10,
    layers=(*_conv_bn("stem", 8), ReLU(),
            Residual((*_conv_bn("block_0/a", 8), ReLU(), *_conv_bn("block_0/b", 8))), ReLU(),
            Residual((*_conv_bn("block_1/a", 16, stride=2), ReLU(), *_conv_bn("block_1/b", 16)),
                     shortcut=(Conv2D(16, 1, "block_1/shortcut/conv", stride=2, padding=0),
                               BatchNorm("block_1/shortcut/bn"))), ReLU(),
            GlobalAvgPool(), Dense(10, "head")),
    data=DataSpec(source="synthetic-images", dir_source="cifar10", n_train=768, n_test=256),
    # SGD, not Adam: the conv biases before BatchNorm have a true gradient of 0, and Adam would turn float32
    # rounding noise there into full-size steps that no float32 framework can reproduce exactly
    optimizer=OptimizerSpec(kind="sgd", learning_rate=0.05, momentum=0.9),
    batch_size=64, epochs=4,
    # BatchNorm at lr 0.05 amplifies rounding: the float64 reference's own arithmetic run in float32 drifts
    # 9.6e-5 in the first 10 losses and 3.8e-4 in the moving statistics, so those tolerances are 2-3x that.
    # Gradients: one stem pre-activation is -2.1e-7 in float64 and +5.9e-7 under TensorFlow's XLA; the flipped ReLU
    # moves one conv-kernel gradient entry by 9.3e-5, hence 2e-4
    parity=ParitySpec(steps=10, grad_atol=2e-4, loss_atol=2e-4, state_atol=1e-3),
    target=0.70, accuracy_band=(0.70, 1.0),
)

LSTM_DIGITS = Workload(
    name="lstm-digits",
    description="LSTM(32) reading each digit image row by row (8 steps x 8 features), Adam 1e-2, batch 32, 6 epochs",
    input_shape=(8, 8),
    num_classes=10,
    layers=(LSTM(32, "lstm"), Dense(10, "head")),
    data=DataSpec(source="digits"),
    optimizer=OptimizerSpec(kind="adam", learning_rate=1e-2, beta1=0.9, beta2=0.999, epsilon=1e-8),
    batch_size=32, epochs=6,
    target=0.90, accuracy_band=(0.85, 1.0),
)

VIT_DIGITS = Workload(
    name="vit-digits",
    description="Vision Transformer on digits: 2x2 patches -> 16 tokens of width 32, 2 pre-norm blocks (4 heads), "
                "mean pool; AdamW 2e-3 (wd 0.01), 20-step warm-up + cosine, clip 1.0, dropout 0.1, batch 32, 8 epochs",
    input_shape=(8, 8, 1),
    num_classes=10,
    layers=(Conv2D(32, 2, "patch_embed", stride=2, padding=0), Reshape((16, 32)), PositionalEmbedding(16, "pos"),
            *_encoder_block(0, 32, 4), *_encoder_block(1, 32, 4), LayerNorm("ln_f"), GlobalAvgPool(),
            Dropout(0.1), Dense(10, "head")),
    data=DataSpec(source="digits"),
    optimizer=OptimizerSpec(kind="adamw", learning_rate=2e-3, weight_decay=0.01, clip_norm=1.0),
    schedule=ScheduleSpec(kind="cosine", warmup_steps=20),
    batch_size=32, epochs=8,
    # the patch-embedding gradients reach ~7.5: float32's ~1e-6 relative error is ~8e-6 there
    parity=ParitySpec(grad_atol=3e-5),
    target=0.90, accuracy_band=(0.85, 1.0),
)

GPT_TINY = Workload(
    name="gpt-tiny",
    description="Causal Transformer LM (2 blocks, width 32, 4 heads, context 16) on a synthetic Markov-chain corpus "
                "(vocab 32, entropy rate 0.90 nats/token), Adam 3e-3, 20-step warm-up + cosine, batch 32, 4 epochs",
    input_shape=(16,),
    num_classes=32,
    layers=(Embedding(32, 32, "embed"), PositionalEmbedding(16, "pos"),
            *_encoder_block(0, 32, 4, causal=True), *_encoder_block(1, 32, 4, causal=True),
            LayerNorm("ln_f"), Dense(32, "lm_head")),
    data=DataSpec(source="synthetic-tokens", seq_len=16, vocab=32, n_train=2048, n_test=256),
    optimizer=OptimizerSpec(kind="adam", learning_rate=3e-3),
    schedule=ScheduleSpec(kind="cosine", warmup_steps=20),
    batch_size=32, epochs=4,
    metric="loss", target=1.1, accuracy_band=(0.85, 1.15),
)

# DP-SGD: the same models privately (clip 1, noise multiplier 1.1, Poisson sampling at q = 32 / 1438 per step);
# epsilon at delta 1e-4 (1 / n_train rounded down to a power of ten) comes from the accountants
# (workloads/privacy.py). Per-step losses follow the reference as closely as the non-private ones; the first
# steps' losses and the clipped per-example gradient sum (entries up to ~1) meet the float32 tolerances.
_DP = OptimizerSpec(kind="dp-sgd", base="sgd", learning_rate=0.02, momentum=0.9, clip=1.0, noise_multiplier=1.1,
                    sampling="poisson")

DP_MLP = replace(
    SEED_MLP, name="dp-mlp",
    description="seed-mlp trained with DP-SGD: per-example clip 1.0, noise multiplier 1.1, Poisson sampling "
                "(q = 32/1438), SGD lr 0.02 momentum 0.9, 10 epochs; epsilon 2.04 at delta 1e-4 (PLD; RDP 2.33)",
    optimizer=_DP,
    parity=ParitySpec(epochs=None),
    target=0.85, accuracy_band=(0.80, 1.0),
)

DP_LENET5 = replace(
    LENET5, name="dp-lenet5",
    description="lenet5 trained with DP-SGD: per-example clip 1.0, noise multiplier 1.1, Poisson sampling "
                "(q = 32/1438), SGD lr 0.02 momentum 0.9, 6 epochs; epsilon 1.58 at delta 1e-4 (PLD; RDP 1.84)",
    optimizer=_DP, epochs=6,
    parity=ParitySpec(epochs=1),
    target=0.75, accuracy_band=(0.70, 1.0),
)

# ---- compute-bound workloads: realistic sizes on synthetic data, shrunk by a scale s in (0, 1] ----------------------
# Full scale (s = 1) is the definition the name states. At scale s (docs/workloads.md): every width, depth, image
# size or context, vocabulary or class count and data set size is its full value times s, rounded as
# _scaled says and never below the stated floor; widths stay a multiple of the head count (12 heads of width
# round(64 s)); batch size, optimizer and epochs do not change. The parity check trains them at a small scale
# (config.COMPUTE_PARITY_SCALE): a float64 numpy reference of the full models would take hours per step.

def _scaled(full: int, s: float, least: int) -> int:
    """``full`` x ``s`` rounded to the nearest integer, at least ``least``."""
    return max(least, int(round(full * s)))


def _basic_block(name: str, filters: int, stride: int) -> tuple:
    """ResNet BasicBlock: two 3x3 conv-BN, ReLU between and after the add; a 1x1 strided conv-BN shortcut when the
    block halves the size or changes the width."""
    shortcut = (Conv2D(filters, 1, f"{name}/shortcut/conv", stride=stride, padding=0),
                BatchNorm(f"{name}/shortcut/bn")) if stride != 1 else ()
    return (Residual((*_conv_bn(f"{name}/a", filters, stride=stride), ReLU(), *_conv_bn(f"{name}/b", filters)),
                     shortcut=shortcut), ReLU())


def resnet18(scale: float = 1.0) -> Workload:
    """ResNet-18 on synthetic ImageNet-shaped images: at full scale 224x224x3, 1000 classes, 7x7/2 stem conv-BN-ReLU,
    2x2 max pool, four stages of BasicBlocks [2, 2, 2, 2] of widths 64-128-256-512 (stride 2 from the second
    stage), global average pool, dense head. Scale s: base width round(64 s) (at least 2), blocks per stage
    round(2 s) (at least 1), image 32 round(7 s) (at least 32), classes round(1000 s) (at least 10), data
    round(512 s) / round(128 s) images (at least 64 / 16)."""
    width, blocks = _scaled(64, scale, 2), _scaled(2, scale, 1)
    size, classes = 32 * _scaled(7, scale, 1), _scaled(1000, scale, 10)
    stages = []
    for i, mult in enumerate((1, 2, 4, 8)):
        for j in range(blocks):
            stages += _basic_block(f"stage_{i}/block_{j}", width * mult, 2 if i and not j else 1)
    at = "" if scale == 1 else f" [scale {scale:g}]"
    return Workload(
        name="resnet18",
        description=f"ResNet-18 class CNN{at}: BasicBlocks [{', '.join([str(blocks)] * 4)}], widths {width}-"
                    f"{8 * width}, on synthetic {size}x{size}x3 images of {classes} classes, SGD 0.05 momentum 0.9, "
                    "batch 32, 1 epoch (compute-bound)",
        input_shape=(size, size, 3),
        num_classes=classes,
        layers=(Conv2D(width, 7, "stem/conv", stride=2, padding=3), BatchNorm("stem/bn"), ReLU(), MaxPool2D(2),
                *stages, GlobalAvgPool(), Dense(classes, "head")),
        data=DataSpec(source="synthetic-images", n_train=_scaled(512, scale, 64), n_test=_scaled(128, scale, 16)),
        optimizer=OptimizerSpec(kind="sgd", learning_rate=0.05, momentum=0.9),  # SGD, not Adam: see resnet-mini
        batch_size=32, epochs=1,
        # measured at the parity scale in the three frameworks (docs/workloads.md): step-0 gradients up to 2.8e-6
        # off (BatchNorm behind strided convs), losses 6.1e-7, moving statistics 3.2e-7; about 10x margin
        parity=ParitySpec(steps=2, grad_atol=3e-5),
        # one epoch of a throughput workload: the band only says "learns something", twice chance
        target=2 / classes, accuracy_band=(0.0, 1.0),
    )


def _transformer(scale: float, layers: int, context: int, vocab: int) -> tuple[int, int, int, int]:
    """(width, depth, context, vocab) of a 12-head, 768-wide Transformer at ``scale``."""
    return 12 * _scaled(64, scale, 1), _scaled(layers, scale, 1), _scaled(context, scale, 8), _scaled(vocab, scale, 64)


def gpt2_small(scale: float = 1.0) -> Workload:
    """GPT-2 small class decoder: at full scale 12 pre-norm causal blocks of width 768, 12 heads, 4x GELU MLP,
    context 256, GPT-2's vocabulary size 50257 (untied embedding and LM head), on a synthetic Markov-chain corpus.
    Scale s: width 12 round(64 s), depth round(12 s) (at least 1), context round(256 s) (at least 8), vocab
    round(50257 s) (at least 64), data round(512 s) / round(64 s) windows (at least 16 / 8)."""
    width, depth, context, vocab = _transformer(scale, 12, 256, 50257)
    at = "" if scale == 1 else f" [scale {scale:g}]"
    return Workload(
        name="gpt2-small",
        description=f"GPT-2 small class causal LM{at}: {depth} block{'s' * (depth > 1)}, width {width}, 12 heads, "
                    f"4x MLP, context {context}, vocab {vocab}, on a synthetic Markov-chain corpus, Adam 3e-4, "
                    "10-step warm-up + "
                    "cosine, batch 8, 1 epoch (compute-bound)",
        input_shape=(context,),
        num_classes=vocab,
        layers=(Embedding(vocab, width, "embed"), PositionalEmbedding(context, "pos"),
                *(layer for i in range(depth) for layer in _encoder_block(i, width, 12, causal=True, mlp_ratio=4)),
                LayerNorm("ln_f"), Dense(vocab, "lm_head")),
        data=DataSpec(source="synthetic-tokens", seq_len=context, vocab=vocab, n_train=_scaled(512, scale, 16),
                      n_test=_scaled(64, scale, 8)),
        optimizer=OptimizerSpec(kind="adam", learning_rate=3e-4),
        schedule=ScheduleSpec(kind="cosine", warmup_steps=10),
        batch_size=8, epochs=1,
        parity=ParitySpec(steps=4),  # measured: logits 3.8e-7, losses 8.4e-7, test loss 6.9e-7 off at most
        # a throughput workload: the test loss must only beat a uniform guess, ln(vocab) nats
        metric="loss", target=log(vocab), accuracy_band=(0.0, log(vocab)),
    )


def bert_base(scale: float = 1.0) -> Workload:
    """BERT-base class encoder for sequence classification: at full scale 12 pre-norm blocks of width 768, 12 heads,
    4x GELU MLP, not causal, sequence 128, BERT's vocabulary size 30522, mean pool and a 2-class head, on synthetic
    token sequences whose class is the Markov chain that generated them. Scale s: width 12 round(64 s), depth
    round(12 s) (at least 1), sequence round(128 s) (at least 8), vocab round(30522 s) (at least 64), data
    round(1024 s) / round(256 s) sequences (at least 64 / 16)."""
    width, depth, context, vocab = _transformer(scale, 12, 128, 30522)
    at = "" if scale == 1 else f" [scale {scale:g}]"
    return Workload(
        name="bert-base",
        description=f"BERT-base class encoder{at}: {depth} block{'s' * (depth > 1)}, width {width}, 12 heads, "
                    f"4x MLP, sequence {context}, vocab {vocab}, mean pool, 2 classes of synthetic token sequences, "
                    "AdamW 1e-4 "
                    "(wd 0.01), 10-step warm-up + cosine, batch 32, 1 epoch (compute-bound)",
        input_shape=(context,),
        num_classes=2,
        layers=(Embedding(vocab, width, "embed"), PositionalEmbedding(context, "pos"),
                *(layer for i in range(depth) for layer in _encoder_block(i, width, 12, mlp_ratio=4)),
                LayerNorm("ln_f"), GlobalAvgPool(), Dense(2, "head")),
        data=DataSpec(source="synthetic-token-classes", seq_len=context, vocab=vocab,
                      n_train=_scaled(1024, scale, 64), n_test=_scaled(256, scale, 16)),
        optimizer=OptimizerSpec(kind="adamw", learning_rate=1e-4, weight_decay=0.01),
        schedule=ScheduleSpec(kind="cosine", warmup_steps=10),
        batch_size=32, epochs=1,
        parity=ParitySpec(steps=2),  # measured: logits 6.6e-7, gradients 3.4e-7, losses 9.9e-8 off at most
        target=0.6, accuracy_band=(0.0, 1.0),  # a throughput workload: above chance (0.5) is all it states
    )


SCALABLE: dict[str, Callable[[float], Workload]] = {"resnet18": resnet18, "gpt2-small": gpt2_small,
                                                    "bert-base": bert_base}
"""The compute-bound workloads by name: ``SCALABLE[name](s)`` is the workload at scale s in (0, 1]."""

BUILTIN: dict[str, Workload] = {w.name: w for w in (SEED_MLP, LENET5, RESNET_MINI, LSTM_DIGITS, VIT_DIGITS, GPT_TINY,
                                                    DP_MLP, DP_LENET5, *(build() for build in SCALABLE.values()))}

# The cost of privacy: each private built-in names the non-private built-in it was made from, which `isobench run`
# measures in the same session (unless --no-counterpart). The counterpart keeps its own optimizer (seed-mlp: SGD lr
# 0.01 without momentum), so the comparison is the private recipe against the usual non-private one.
COUNTERPARTS: dict[str, str] = {DP_MLP.name: SEED_MLP.name, DP_LENET5.name: LENET5.name}
