"""PyTorch backend: the workload as ``torch.nn`` modules and a ``torch.optim`` optimizer, run eagerly or
through ``torch.compile``, in float32 or mixed precision, on the CPU or a CUDA GPU.

Layout. Images are PyTorch's native NCHW (contiguous) inside the model; the data is permuted once in
``build``. Every other tensor keeps the canonical batch-first, channels-last layout. Only the layers whose
result depends on the axis order see a permute: ``Flatten``/``Reshape`` (canonical NHWC order), and
``Dense``/``LayerNorm`` applied to an image (they act on the channel axis). Sequences stay ``(B, T, D)``
(``nn.LSTM(batch_first=True)``, attention on ``(B, heads, T, dh)``).

Parameters are loaded from, and converted back to, the canonical layout through one table of slots
(canonical name -> torch tensor and the view that gives the canonical array), so ``params()``,
``gradients()`` and loading cannot disagree:

- Dense -> ``nn.Linear`` (weight = kernel.T); Conv2D -> ``nn.Conv2d`` (weight = kernel HWIO -> OIHW);
- BatchNorm -> ``nn.BatchNorm2d`` on images, ``nn.BatchNorm1d`` on ``(-1, C)`` otherwise, torch momentum
  ``1 - spec momentum``; torch's ``running_var`` is the unbiased estimator the spec asks for;
- LSTM -> ``nn.LSTM`` (gate order i, f, g, o as in the spec): ``weight_ih_l0 = kernel.T``,
  ``weight_hh_l0 = recurrent_kernel.T``, ``bias_ih_l0 = bias``; torch's second bias ``bias_hh_l0`` is zero and
  frozen (``requires_grad=False``, not given to the optimizer), so the one spec bias is trained once;
- MultiHeadSelfAttention -> one packed q|k|v ``nn.Linear(D, 3D)`` + output ``nn.Linear`` around
  ``F.scaled_dot_product_attention`` (``is_causal``); default scale ``1/sqrt(D/heads)``.

Dropout uses ``nn.Dropout`` and therefore torch's default generator, seeded with the workload seed in
``build`` (that generator is process-wide; the worker runs one trainer per process; compiled code draws from
Inductor's generator, seeded from it). Dropout is active in ``train_step`` only: ``evaluate``/``logits`` run in
eval mode, and ``gradients`` runs BatchNorm in training mode but with Dropout off, so the probe is
deterministic and leaves the dropout RNG stream untouched ("changes nothing"); parity runs with rate 0 anyway.

Optimizers are ``torch.optim`` SGD/Adam/AdamW/RMSprop with every hyperparameter explicit; their update
rules are the reference's (torch-form Nesterov, Adam with eps outside sqrt(v-hat), AdamW decay on every
parameter, RMSprop from a zero accumulator with eps outside the root). Clipping is ``clip_grad_norm_``, whose
``min(1, clip / (norm + 1e-6))`` scale is the spec's and is applied without a host sync. The two optimizer
implementations differ only in the kernels: ``neutral`` uses the fastest exact implementation on the CPU, fused
kernels for SGD/Adam/AdamW and foreach for RMSprop (``_FAST_IMPL``); ``library`` passes neither ``fused`` nor
``foreach``, so torch.optim makes its own default choice, as a user's script gets it (the per-parameter loop on
the CPU, foreach on a GPU). The per-step learning rate is a Python float written into ``param_groups``.

Modes. ``eager`` runs the modules as they are. ``compile`` applies ``torch.compile`` (Inductor, the default
backend; C++ kernels built with the system compiler on the CPU) to the whole training step, in the two pieces
Dynamo allows (it stops at ``Tensor.backward()``): (1) forward + loss, whose backward AOTAutograd compiles with
it, and (2) gradient clipping + optimizer step (``torch.optim``'s compiled-optimizer path: the learning rate a
0-d tensor updated in place, so a changing schedule never recompiles; ``neutral``: the foreach implementation
with ``capturable`` step counters, ``library``: torch.optim's default flags, as torch's compiled-optimizer
recipe writes it). The evaluation forward is compiled separately (inference graph). Nothing is
compiled in ``build`` (which only imports Dynamo): compilation happens in the first ``train_step`` (and
the first ``evaluate``), where the worker measures it as ``compile_s``; Inductor's on-disk cache
(``TORCHINDUCTOR_CACHE_DIR``) makes a repeat compile of the same graphs several times faster. With fp16 the
update stays eager (GradScaler skips non-finite steps after a host check: data-dependent control flow); LSTMs run
as ATen kernels between compiled graphs.

Partial last batch: the batch dimension of every compiled input is marked dynamic (``maybe_mark_dynamic``;
every other dimension static, ``dynamic=False``), so one graph serves full and partial batches, with BatchNorm
statistics over exactly the rows given (no padding), like TensorFlow's ``None`` batch dimension. A fully static
graph would step barely faster but recompile for the partial batch, as costly as the first compile, inside the
first epoch (figures in docs/measurement.md, "Backend design choices").

Precision. ``fp32``: float32 everywhere, TF32 off (set in ``setup`` and again in ``build``). ``bf16``/``fp16``:
``torch.autocast`` around forward + loss (the logits are cast to float32 before the loss), float32 master
weights, float32 optimizer state and gradients; fp16 adds dynamic loss scaling (``torch.amp.GradScaler`` with
its defaults: initial scale 2**16, doubled after 2000 finite steps; gradients are unscaled before clipping, a
step with non-finite gradients is skipped and the scale halved).
``gradients()`` returns float32 gradients of the unscaled loss (see its docstring for fp16). On CPUs without
bf16/fp16 instructions (``mkldnn_bf16_supported`` false in ``setup``) oneDNN emulates them, several times slower
than fp32 (docs/measurement.md). On a CPU whose oneDNN has no bf16/fp16 LSTM (no AVX512-BF16/FP16 or AMX;
``torch.ops.mkldnn._is_mkldnn_bf16_supported``) the LSTM runs in float32 outside autocast, as autocast does
for every op it has no low-precision kernel for; the layers around it stay in mixed precision.

Device. ``cuda``: model, optimizer state and data on the first visible GPU; ``device_peak_bytes`` is the
allocator's high-water mark since the end of ``build``.

torch is imported in :meth:`TorchBackend.setup` / :meth:`TorchBackend.build`, never at module import.
"""
from __future__ import annotations

import os
import warnings
from contextlib import contextmanager, nullcontext
from functools import cache
from typing import Any, Callable

import numpy as np

from ..data import Dataset
from ..results import FrameworkSettings
from ..workloads.spec import (AvgPool2D, BatchNorm, Conv2D, Dense, Dropout, Embedding, Flatten, GELU, GlobalAvgPool,
                              LayerNorm, LSTM, MaxPool2D, MultiHeadSelfAttention, PositionalEmbedding, ReLU, Reshape,
                              Residual, Tanh, Workload)
from . import display_name
from .base import Backend, LayerBuilder, Trainer, check_optimizer, env_flags
from .common import CLIP_EPS, HeldRate, conv_size, overflow_free, pool_window
from .private import Noise, base_workload, check_private, private_padder

DISPLAY = display_name("torch")

# optimizer kind -> the fastest torch.optim implementation on the CPU (measured: fused 2-5x faster than the
# default per-tensor loop, foreach 1.5-3x)
_FAST_IMPL = {"sgd": {"fused": True}, "adam": {"fused": True}, "adamw": {"fused": True},
              "rmsprop": {"foreach": True}}  # RMSprop has no fused kernel
# the implementation torch.compile traces (it does not trace into fused kernels); with a tensor learning rate,
# Adam/AdamW/RMSprop need capturable step counters
_COMPILED_IMPL = {"sgd": {"foreach": True}, "adam": {"foreach": True, "capturable": True},
                  "adamw": {"foreach": True, "capturable": True}, "rmsprop": {"foreach": True, "capturable": True}}
_AMP_DTYPES = {"bf16": "bfloat16", "fp16": "float16"}  # precision -> torch dtype name for autocast


@cache
def _modules():
    """The small ``nn.Module`` classes the spec needs beyond torch.nn (defined on first use: lazy import)."""
    return {**_layout_modules(), **_layer_modules()}


def _layout_modules():
    """Permutes, reshapes and reductions between torch's NCHW and the canonical channels-last layout."""
    from torch import nn

    class ToChannelsLast(nn.Module):
        """NCHW -> canonical NHWC."""

        def forward(self, x):
            return x.permute(0, 2, 3, 1)

    class ToChannelsFirst(nn.Module):
        """Canonical NHWC -> contiguous NCHW."""

        def forward(self, x):
            return x.permute(0, 3, 1, 2).contiguous()

    class OnChannelsLast(nn.Module):
        """Apply a last-axis module (Linear, LayerNorm) to an NCHW image."""

        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

    class Reshape(nn.Module):
        def __init__(self, shape):
            super().__init__()
            self.shape = tuple(shape)

        def forward(self, x):
            return x.reshape((x.shape[0],) + self.shape)

    class Mean(nn.Module):
        """Global average pooling over ``dims``."""

        def __init__(self, dims):
            super().__init__()
            self.dims = tuple(dims)

        def forward(self, x):
            return x.mean(dim=self.dims)

    class FlatBatchNorm(nn.BatchNorm1d):
        """BatchNorm over every axis but the last, for channels-last tensors of any rank."""

        def forward(self, x):
            return super().forward(x.reshape(-1, x.shape[-1])).reshape(x.shape)

    return dict(ToChannelsLast=ToChannelsLast, ToChannelsFirst=ToChannelsFirst, OnChannelsLast=OnChannelsLast,
                Reshape=Reshape, Mean=Mean, FlatBatchNorm=FlatBatchNorm)


def _layer_modules():
    """Spec layers torch.nn has no module for as the spec defines them."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    class PositionalEmbedding(nn.Module):
        def __init__(self, max_len, dim, **factory):
            super().__init__()
            self.weight = nn.Parameter(torch.zeros(max_len, dim, **factory))

        def forward(self, x):
            return x + self.weight[:x.shape[1]]

    class LSTM(nn.Module):
        """``nn.LSTM`` returning the whole sequence or the last hidden state; ``float32``: run outside autocast."""

        def __init__(self, lstm, return_sequences, float32=False):
            super().__init__()
            self.lstm, self.return_sequences, self.float32 = lstm, return_sequences, float32

        def forward(self, x):
            if self.float32:
                with torch.autocast(x.device.type, enabled=False):
                    out, (h, _) = self.lstm(x.float())
            else:
                out, (h, _) = self.lstm(x)
            return out if self.return_sequences else h[0]

    class SelfAttention(nn.Module):
        """Multi-head self-attention on (B, T, D): packed q|k|v projection, SDPA, output projection."""

        def __init__(self, dim, heads, causal, **factory):
            super().__init__()
            self.qkv, self.out = nn.Linear(dim, 3 * dim, **factory), nn.Linear(dim, dim, **factory)
            self.heads, self.causal = heads, causal

        def forward(self, x):
            b, t, d = x.shape
            # (B, T, 3, heads, dh) -> 3 x (B, heads, T, dh): heads split head-major, as the spec says
            q, k, v = self.qkv(x).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
            y = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
            return self.out(y.transpose(1, 2).reshape(b, t, d))

    class Residual(nn.Module):
        def __init__(self, block, shortcut):
            super().__init__()
            self.block, self.shortcut = block, shortcut

        def forward(self, x):
            return self.block(x) + self.shortcut(x)

    return dict(PositionalEmbedding=PositionalEmbedding, LSTM=LSTM, SelfAttention=SelfAttention, Residual=Residual)


class _Builder(LayerBuilder):
    """Spec layers -> ``nn.Module`` tree, loading the canonical parameters and recording their slots.

    A slot is ``canonical name -> (torch tensor, view)``: ``view(t)`` turns the tensor (or its gradient)
    into the canonical array. Per-example shapes are tracked canonically; rank-3 shapes (images) are NCHW
    tensors inside the model. Every module is created in ``dtype`` on ``device`` (moving it afterwards would
    replace the BatchNorm buffers the slots point to); ``lstm_float32``: LSTMs run outside autocast."""

    display = DISPLAY

    def __init__(self, params: dict[str, np.ndarray], dtype, device, lstm_float32: bool = False):
        import torch
        from torch import nn

        self.torch, self.nn, self.m = torch, nn, _modules()
        self.params, self.kw, self.lstm_float32 = params, {"dtype": dtype, "device": device}, lstm_float32
        self.slots: dict[str, tuple[Any, Callable]] = {}   # trainable parameters
        self.state: dict[str, tuple[Any, Callable]] = {}   # BatchNorm moving statistics (buffers)
        self.trainable: list = []                           # torch parameters given to the optimizer

    def _load(self, name: str, tensor, view: Callable = lambda t: t, *, state: bool = False, part=None):
        """Copy canonical ``params[name]`` into ``tensor`` (``part``: its slice of a packed tensor), record the slot."""
        target = tensor if part is None else tensor[part]
        value = self.torch.from_numpy(np.ascontiguousarray(self.params[name]))
        with self.torch.no_grad():
            view(target).copy_(value)  # views alias the tensor: writing the canonical view writes the weight
        whole = view if part is None else (lambda t, v=view, p=part: v(t[p]))
        (self.state if state else self.slots)[name] = (tensor, whole)
        if not state and not any(tensor is p for p in self.trainable):
            self.trainable.append(tensor)

    def sequential(self, layers, shape):
        mods = []
        for layer in layers:
            mod, shape = self.build(layer, shape)
            mods.append(mod)
        return self.nn.Sequential(*mods), shape

    # ---- one method per spec layer kind: (layer, canonical input shape) -> (module, output shape) ----

    def dense(self, layer: Dense, shape):
        lin = self.nn.Linear(shape[-1], layer.units, **self.kw)
        self._load(f"{layer.name}/kernel", lin.weight, lambda t: t.T)
        self._load(f"{layer.name}/bias", lin.bias)
        return (self.m["OnChannelsLast"](lin) if len(shape) == 3 else lin), shape[:-1] + (layer.units,)

    def conv2d(self, layer: Conv2D, shape):
        h, w, c = shape
        k, s, p = layer.kernel_size, layer.stride, layer.pad
        conv = self.nn.Conv2d(c, layer.filters, k, stride=s, padding=p, **self.kw)
        self._load(f"{layer.name}/kernel", conv.weight, lambda t: t.permute(2, 3, 1, 0))  # OIHW <-> HWIO
        self._load(f"{layer.name}/bias", conv.bias)
        return conv, (conv_size(h, k, s, p), conv_size(w, k, s, p), layer.filters)

    def maxpool2d(self, layer: MaxPool2D, shape):
        return self._pool(self.nn.MaxPool2d, layer, shape)

    def avgpool2d(self, layer: AvgPool2D, shape):
        return self._pool(self.nn.AvgPool2d, layer, shape)

    def _pool(self, cls, layer, shape):
        (h, w, c), (k, s) = shape, pool_window(layer)
        return cls(k, s), (conv_size(h, k, s), conv_size(w, k, s), c)

    def global_avg_pool(self, layer: GlobalAvgPool, shape):
        return self.m["Mean"]((2, 3) if len(shape) == 3 else range(1, len(shape))), (shape[-1],)

    def flatten(self, layer: Flatten, shape):
        flat = self.nn.Flatten()
        return (self.nn.Sequential(self.m["ToChannelsLast"](), flat) if len(shape) == 3 else flat), \
            (int(np.prod(shape)),)

    def reshape(self, layer: Reshape, shape):
        m, new = self.m, tuple(layer.shape)
        mods = ([m["ToChannelsLast"]()] if len(shape) == 3 else []) + [m["Reshape"](new)] + \
               ([m["ToChannelsFirst"]()] if len(new) == 3 else [])
        return (mods[0] if len(mods) == 1 else self.nn.Sequential(*mods)), new

    def relu(self, layer: ReLU, shape):
        return self.nn.ReLU(), shape

    def gelu(self, layer: GELU, shape):
        return self.nn.GELU(approximate="none"), shape

    def tanh(self, layer: Tanh, shape):
        return self.nn.Tanh(), shape

    def dropout(self, layer: Dropout, shape):
        return self.nn.Dropout(layer.rate), shape

    def batchnorm(self, layer: BatchNorm, shape):
        cls = self.nn.BatchNorm2d if len(shape) == 3 else self.m["FlatBatchNorm"]
        bn = cls(shape[-1], eps=layer.epsilon, momentum=1.0 - layer.momentum, **self.kw)
        self._load(f"{layer.name}/gamma", bn.weight)
        self._load(f"{layer.name}/beta", bn.bias)
        self._load(f"{layer.name}/moving_mean", bn.running_mean, state=True)
        self._load(f"{layer.name}/moving_var", bn.running_var, state=True)
        return bn, shape

    def layernorm(self, layer: LayerNorm, shape):
        ln = self.nn.LayerNorm(shape[-1], eps=layer.epsilon, **self.kw)
        self._load(f"{layer.name}/gamma", ln.weight)
        self._load(f"{layer.name}/beta", ln.bias)
        return (self.m["OnChannelsLast"](ln) if len(shape) == 3 else ln), shape

    def embedding(self, layer: Embedding, shape):
        emb = self.nn.Embedding(layer.vocab, layer.dim, **self.kw)
        self._load(f"{layer.name}/embeddings", emb.weight)
        return emb, shape + (layer.dim,)

    def positional_embedding(self, layer: PositionalEmbedding, shape):
        pos = self.m["PositionalEmbedding"](layer.max_len, shape[1], **self.kw)
        self._load(f"{layer.name}/embeddings", pos.weight)
        return pos, shape

    def lstm(self, layer: LSTM, shape):
        lstm = self.nn.LSTM(shape[1], layer.units, batch_first=True, **self.kw)
        self._load(f"{layer.name}/kernel", lstm.weight_ih_l0, lambda t: t.T)
        self._load(f"{layer.name}/recurrent_kernel", lstm.weight_hh_l0, lambda t: t.T)
        self._load(f"{layer.name}/bias", lstm.bias_ih_l0)
        with self.torch.no_grad():  # the spec has one bias: torch's second one stays 0, untrained
            lstm.bias_hh_l0.zero_()
        lstm.bias_hh_l0.requires_grad_(False)
        out = (shape[0], layer.units) if layer.return_sequences else (layer.units,)
        return self.m["LSTM"](lstm, layer.return_sequences, self.lstm_float32), out

    def attention(self, layer: MultiHeadSelfAttention, shape):
        d = shape[1]
        att = self.m["SelfAttention"](d, layer.num_heads, layer.causal, **self.kw)
        for i, part in enumerate(("query", "key", "value")):  # packed rows: q | k | v
            rows = slice(i * d, (i + 1) * d)
            self._load(f"{layer.name}/{part}/kernel", att.qkv.weight, lambda t: t.T, part=rows)
            self._load(f"{layer.name}/{part}/bias", att.qkv.bias, part=rows)
        self._load(f"{layer.name}/output/kernel", att.out.weight, lambda t: t.T)
        self._load(f"{layer.name}/output/bias", att.out.bias)
        return att, shape

    def residual(self, layer: Residual, shape):
        block, out = self.sequential(layer.block, shape)
        shortcut = self.sequential(layer.shortcut, shape)[0] if layer.shortcut else self.nn.Identity()
        return self.m["Residual"](block, shortcut), out


class TorchTrainer(Trainer):
    """The workload as an ``nn.Sequential``, its ``torch.optim`` optimizer and the data as tensors on ``device``.

    ``dtype`` (default float32) may be ``torch.float64`` to train the same model in double precision
    (eager, fp32 only: not a mode; a possible second reference)."""

    def __init__(self, workload: Workload, params: dict[str, np.ndarray], data: Dataset, mode: str = "eager",
                 dtype=None, *, precision: str = "fp32", device: str = "cpu", optimizer: str = "neutral"):
        import torch
        from torch import nn

        self._torch = torch
        self.dtype = dtype or torch.float32
        if mode not in TorchBackend.modes or precision not in TorchBackend.precisions:
            raise ValueError(f"unknown mode or precision {mode!r}, {precision!r} for {DISPLAY}")
        if self.dtype != torch.float32 and (mode, precision) != ("eager", "fp32"):
            raise ValueError(f"a {self.dtype} model runs in eager mode and fp32 only")
        self.device = torch.device(_check_device(torch, device))
        self._on_gpu = self.device.type != "cpu"
        _tf32(torch, precision == "tf32")
        self.mode, self.precision = mode, precision
        self._amp_dtype = getattr(torch, _AMP_DTYPES[precision]) if precision in _AMP_DTYPES else None
        if self._amp_dtype is not None:
            _check_amp(torch, self.device.type, self._amp_dtype)
        torch.manual_seed(workload.seed)  # nn.Dropout draws from the default generator
        lstm_float32 = self._amp_dtype is not None and self.device.type == "cpu" and not (
            torch.ops.mkldnn._is_mkldnn_bf16_supported() if precision == "bf16"
            else torch.ops.mkldnn._is_mkldnn_fp16_supported())
        builder = _Builder(params, self.dtype, self.device, lstm_float32)
        model, out_shape = builder.sequential(workload.layers, tuple(workload.input_shape))
        # Contiguous NCHW, not the channels_last memory format: channels_last is ~20-30% faster on resnet-mini
        # here, but its oneDNN convolution backward is less exact (step-0 gradients 9e-5 off the float64
        # reference instead of 8e-7, over the 1e-5 parity tolerance).
        self.model = model.train()
        self._slots, self._state, self._params = builder.slots, builder.state, builder.trainable
        self._dropouts = [mod for mod in self.model.modules() if isinstance(mod, nn.Dropout)]
        self._image_in, self._image_out = len(workload.input_shape) == 3, len(out_shape) == 3
        self._tokens = workload.input_dtype == "int32"
        self._clip = workload.optimizer.clip_norm
        self.loss_fn = nn.CrossEntropyLoss(reduction="mean")
        # fp16: dynamic loss scaling; its update stays eager (GradScaler skips non-finite steps on a host check)
        self._scaler = torch.amp.GradScaler(self.device.type) if precision == "fp16" else None
        compiled = mode == "compile"
        compiled_update = compiled and self._scaler is None
        impl = {} if optimizer == "library" else (_COMPILED_IMPL if compiled_update else _FAST_IMPL).get(
            workload.optimizer.kind)  # library: torch.optim's own default flags
        # compiled update: one 0-d learning-rate tensor shared by every group, written in place each step
        self._lr = torch.tensor(float(workload.optimizer.learning_rate), device=self.device) \
            if compiled_update else None
        self.optimizer = _optimizer(torch, workload.optimizer, self._params, impl, self._lr)
        if compiled:  # compiled lazily, at the first call (inside the first train_step / evaluate)
            # Dynamo keeps its graphs per code object, shared by every trainer in the process, and falls back to
            # eager after ``recompile_limit`` (8) of them: start clean (the worker builds one trainer per process)
            torch._dynamo.reset()
            self._loss_graph = torch.compile(self._loss_of, dynamic=False)
            self._eval_graph = torch.compile(self.model, dynamic=False)
            self._update = torch.compile(self._clip_and_step, dynamic=False) if compiled_update else self._eager_update
        else:
            self._loss_graph, self._eval_graph = self._loss_of, self.model
            self._update = self._eager_update if self._scaler is not None else self._clip_and_step
        base_lr = float(workload.optimizer.learning_rate)
        self._rate = HeldRate(base_lr, self._write_lr, value=base_lr)  # the rate the optimizer holds now
        self.x_train, self.x_test = self._input(data.x_train), self._input(data.x_test)
        # class indices must be int64 for CrossEntropyLoss; flattened with the logits for sequence targets
        self.y_train = torch.from_numpy(data.y_train.astype(np.int64)).to(self.device)
        self.y_test = torch.from_numpy(data.y_test.astype(np.int64)).to(self.device)
        if self.device.type == "cuda":
            reset_cuda_peak(torch.cuda)

    def _input(self, x: np.ndarray):
        """Canonical numpy input -> model tensor on the device: int64 tokens, or ``dtype`` features (images NCHW)."""
        t = self._torch.from_numpy(np.asarray(x)).to(self.device)
        if self._tokens:
            return t.to(self._torch.int64)
        if self._image_in:
            t = t.permute(0, 3, 1, 2)
        return t.to(self.dtype).contiguous()

    def _autocast(self):
        """Mixed precision around forward + loss (nothing in fp32)."""
        if self._amp_dtype is None:
            return nullcontext()
        return self._torch.autocast(self.device.type, dtype=self._amp_dtype)

    def _batch_dynamic(self, *tensors):
        """Compiled graphs take any batch size: the batch dimension is symbolic, every other one static."""
        if self.mode == "compile":
            for t in tensors:
                self._torch._dynamo.maybe_mark_dynamic(t, 0)
        return tensors

    def _loss(self, idx: np.ndarray):
        i = self._torch.from_numpy(np.asarray(idx, dtype=np.int64))
        if self._on_gpu:
            i = i.to(self.device)
        # index_select: the same gather as x[i] with less dispatch (about 3 us less per call on the CPU)
        x, y = self.x_train.index_select(0, i), self.y_train.index_select(0, i)
        return self._loss_graph(*self._batch_dynamic(x, y))

    def _loss_of(self, x, y):
        """Forward + loss (compiled as one graph in mode ``compile``); the loss is in the master dtype."""
        with self._autocast():
            logits = self.model(x)
        return self._xent(logits, y)

    def _xent(self, logits, y):
        """Mean cross-entropy over the batch and, for sequence outputs, every position, in the master dtype."""
        if logits.dtype != self.dtype:
            logits = logits.to(self.dtype)
        if logits.dim() > 2:
            logits, y = logits.reshape(-1, logits.shape[-1]), y.reshape(-1)
        return self.loss_fn(logits, y)

    def train_step(self, idx: np.ndarray, lr: float) -> float:
        # Per-step Python is kept to what a hand-written loop does (benchmarks/overhead.py compares the two)
        self._rate.set(lr)  # the schedule's rate for this step, written only when it changes
        self.optimizer.zero_grad(set_to_none=True)
        loss = self._loss(idx)
        (loss if self._scaler is None else self._scaler.scale(loss)).backward()
        self._update()
        return loss.item()

    def _write_lr(self, lr: float) -> None:
        if self._lr is not None:
            self._lr.fill_(lr)
        else:
            for group in self.optimizer.param_groups:
                group["lr"] = lr

    def _clip_and_step(self):
        """Clip (optional) and update: the compiled update in mode ``compile``."""
        if self._clip is not None:
            self._torch.nn.utils.clip_grad_norm_(self._params, self._clip)
        self.optimizer.step()

    def _eager_update(self):
        if self._scaler is None:
            self._clip_and_step()
            return
        if self._clip is not None:
            self._scaler.unscale_(self.optimizer)  # clip the true gradients, not the scaled ones
            self._torch.nn.utils.clip_grad_norm_(self._params, self._clip)
        self._scaler.step(self.optimizer)  # skipped if any gradient is inf/NaN (no sync with fused kernels)
        self._scaler.update()

    @contextmanager
    def _inference(self):
        """Eval mode without autograd, in the training precision; then back to training mode."""
        self.model.eval()
        try:
            with self._torch.inference_mode(), self._autocast():
                yield
        finally:
            self.model.train()

    def _forward_eval(self, x):
        return self._eval_graph(*self._batch_dynamic(x)).to(self.dtype)

    def evaluate(self) -> tuple[float, float]:
        with self._inference():
            logits = self._forward_eval(self.x_test)
            loss = self._xent(logits, self.y_test).item()
            correct = int((logits.argmax(dim=-1) == self.y_test).sum())
        return loss, correct / self.y_test.numel()

    def logits(self, x: np.ndarray) -> np.ndarray:
        with self._inference():
            y = self._forward_eval(self._input(x))
            return _numpy(y.permute(0, 2, 3, 1) if self._image_out else y)

    def gradients(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        """Training-mode gradients of the unscaled loss with Dropout off; BatchNorm state restored; ``.grad``
        and the loss scale untouched. fp16 differentiates the loss times the loss scale, as training does, and
        divides it out again (exact: a power of two); where that overflows it halves the scale until the
        gradients are finite, as the scaler would over the next steps."""
        torch = self._torch
        saved = [t.clone() for t, _ in self._state.values()]
        scale = self._scaler.get_scale() if self._scaler is not None else 1.0
        for d in self._dropouts:
            d.eval()
        try:  # a fresh forward per try: compiled backwards free their buffers (no retain_graph)
            grads, scale = overflow_free(
                lambda sc: torch.autograd.grad(self._loss(idx) * sc, self._params, materialize_grads=True),
                lambda gs: all(bool(torch.isfinite(g).all()) for g in gs), scale)
        finally:
            for d in self._dropouts:
                d.train()
            with self._torch.no_grad():
                for (t, _), s in zip(self._state.values(), saved):
                    t.copy_(s)
        by_param = {id(p): g / scale if scale != 1.0 else g for p, g in zip(self._params, grads)}
        return {name: _numpy(view(by_param[id(t)])) for name, (t, view) in self._slots.items()}

    def params(self) -> dict[str, np.ndarray]:
        return {name: _numpy(view(t.detach())) for name, (t, view) in {**self._slots, **self._state}.items()}

    def device_peak_bytes(self) -> int | None:
        return cuda_peak_bytes(self._torch.cuda) if self.device.type == "cuda" else None


class TorchPrivateTrainer(TorchTrainer):
    """DP-SGD with ``torch.func``: ``vmap(grad_and_value)`` of one example's loss through ``functional_call`` on
    the model's own parameters, each example's gradient scaled by min(1, clip / (norm + 1e-6)) and its row mask,
    summed with one ``tensordot`` per parameter (``compile``: that function compiled by Inductor, a Poisson batch
    padded to a bucketed size with a mask); the step's numpy noise is added in the canonical layout through the slots' views, the sum divided
    by batch_size into ``.grad``, and the base optimizer of :class:`TorchTrainer` steps (in the chosen
    implementation; compiled in mode ``compile``). In eager mode only an empty Poisson batch is padded (one masked
    row)."""

    def __init__(self, workload: Workload, params: dict[str, np.ndarray], data: Dataset, mode: str = "eager",
                 dtype=None, *, precision: str = "fp32", device: str = "cpu", optimizer: str = "neutral"):
        import torch

        check_private(DISPLAY, workload)
        super().__init__(base_workload(workload), params, data, mode, dtype, precision=precision, device=device,
                         optimizer=optimizer)
        names = {id(p): n for n, p in self.model.named_parameters()}
        self._dict = {names[id(p)]: p.detach() for p in self._params}  # shares storage: sees every update
        fixed = {n: t.detach() for n, t in [*self.model.named_parameters(), *self.model.named_buffers()]
                 if n not in self._dict}  # e.g. the LSTM's frozen second bias
        self._noise, clip, self._batch = Noise(workload), workload.optimizer.clip, workload.batch_size
        self._noise_slots = [(self._slots[name], off, shape) for name, off, shape in self._noise.pieces]
        # compile: bucketed padded shapes (Dynamo specialises a vmapped batch axis however it is marked)
        self._padder = private_padder(workload, mode == "compile", np.int64,
                                      lambda n: torch.ones(n, device=self.device))
        per_example = self._per_example(fixed)

        def clipped_sum(p, x, y, mask):
            grads, losses = per_example(p, x, y)
            norms = torch.stack([g.reshape(g.shape[0], -1).square().sum(1) for g in grads]).sum(0).sqrt()
            scale = (clip / (norms + CLIP_EPS)).clamp(max=1.0) * mask
            return (losses * mask).sum() / mask.sum().clamp(min=1.0), [torch.tensordot(scale, g, dims=1)
                                                                          for g in grads]

        self._clipped = torch.compile(clipped_sum, dynamic=False) if mode == "compile" else clipped_sum

    def _per_example(self, fixed: dict):
        """``(params, x, y) -> (per-example gradients of the trainable parameters in the order of _params,
        per-example losses)``: ``vmap(grad_and_value)`` of one example's loss."""
        from torch.func import functional_call, grad_and_value, vmap

        def example_loss(p, x, y):
            return self._xent(functional_call(self.model, (p, fixed), (x.unsqueeze(0),)), y.unsqueeze(0))

        vmapped = vmap(grad_and_value(example_loss), in_dims=(None, 0, 0))

        def per_example(p, x, y):
            grads, losses = vmapped(p, x, y)
            return list(grads.values()), losses

        return per_example

    def _clipped_sum(self, idx: np.ndarray):
        torch = self._torch
        idx, mask = self._padder(idx)
        i = torch.from_numpy(idx).to(self.device)
        if not isinstance(mask, torch.Tensor):
            mask = torch.from_numpy(mask).to(self.device)
        return self._clipped(self._dict, self.x_train.index_select(0, i), self.y_train.index_select(0, i), mask)

    def train_step(self, idx: np.ndarray, lr: float) -> float:
        self._rate.set(lr)
        z = self._torch.from_numpy(self._noise.draw()).to(self.device)  # the step's noise, canonical order
        loss, sums = self._clipped_sum(idx)
        for p, g in zip(self._params, sums):
            p.grad = g
        for (t, view), off, shape in self._noise_slots:  # noise added through the canonical view of .grad
            view(t.grad).add_(z[off:off + int(np.prod(shape))].view(shape), alpha=self._noise.std)
        self._torch._foreach_div_([p.grad for p in self._params], float(self._batch))
        self._update()
        return loss.item()

    def gradients(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        """The clipped per-example sum (before noise and the division by the batch size), canonical layout."""
        by_param = {id(p): g for p, g in zip(self._params, self._clipped_sum(idx)[1])}
        return {name: _numpy(view(by_param[id(t)])) for name, (t, view) in self._slots.items()}


class TorchOpacusTrainer(TorchPrivateTrainer):
    """Mode ``opacus``: :class:`TorchPrivateTrainer` with the per-example gradients from Opacus's
    ``GradSampleModule`` (backward hooks, ``loss_reduction="sum"``) instead of ``torch.func``; the clipping, the sum,
    the numpy noise, the division and the base update are the eager trainer's. Opacus's ``DPOptimizer`` is not used:
    its noise comes from torch's generator, not the step's numpy draw that every framework shares. The input batch
    requires grad: without it the full backward hooks of the first layer do not fire and a convolution's
    per-example gradients come out wrong (docs/workloads.md)."""

    def __init__(self, workload: Workload, params: dict[str, np.ndarray], data: Dataset, mode: str = "opacus",
                 dtype=None, *, precision: str = "fp32", device: str = "cpu", optimizer: str = "neutral"):
        if mode != "opacus":
            raise ValueError(f"unknown mode {mode!r} for {DISPLAY}'s Opacus trainer")
        super().__init__(workload, params, data, "eager", dtype, precision=precision, device=device,
                         optimizer=optimizer)
        self.mode = mode

    def _per_example(self, fixed: dict):
        from opacus import GradSampleModule

        module = GradSampleModule(self.model, batch_first=True, loss_reduction="sum")
        xent = self._torch.nn.CrossEntropyLoss(reduction="none")

        def per_example(p, x, y):
            for t in self._params:
                t.grad = t.grad_sample = None  # Opacus accumulates into grad_sample
            x = x.detach().requires_grad_(x.is_floating_point())  # token ids cannot require grad
            logits = module(x).to(self.dtype)
            losses = xent(logits.reshape(-1, logits.shape[-1]), y.reshape(-1)).reshape(x.shape[0], -1).mean(1)
            losses.sum().backward()
            return [t.grad_sample for t in self._params], losses.detach()

        return per_example


def _numpy(t) -> np.ndarray:
    return t.detach().cpu().numpy().copy()  # copy: C order, detached from torch memory (.cpu() syncs a GPU)


def reset_cuda_peak(cuda) -> None:
    """Start the allocator's high-water mark now (after the device work so far has finished)."""
    cuda.synchronize()
    cuda.reset_peak_memory_stats()


def cuda_peak_bytes(cuda) -> int:
    """Allocator high-water mark in bytes since :func:`reset_cuda_peak`, read after the device work finished."""
    cuda.synchronize()
    return int(cuda.max_memory_allocated())


def _check_device(torch, device: str) -> str:
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"no CUDA GPU visible to PyTorch (torch {torch.__version__}, CUDA build "
                           f"{torch.version.cuda or 'none'}, CUDA_VISIBLE_DEVICES="
                           f"{os.environ.get('CUDA_VISIBLE_DEVICES')!r})")
    return device


def _tf32(torch, on: bool = False) -> None:
    """float32 matmuls and convolutions in full float32 on every device, or (``on``: precision tf32) on TF32
    tensor cores where the GPU has them."""
    torch.backends.cuda.matmul.allow_tf32 = on
    torch.backends.cudnn.allow_tf32 = on
    torch.set_float32_matmul_precision("high" if on else "highest")


def _check_amp(torch, device_type: str, dtype) -> None:
    """Raise a clear error where this torch cannot autocast to ``dtype`` on the device (autocast itself only
    warns and runs in float32) or has no GradScaler for it."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            torch.autocast(device_type, dtype=dtype)
            if dtype == torch.float16:
                torch.amp.GradScaler(device_type)
        except (Warning, RuntimeError, ValueError, AssertionError) as e:
            raise RuntimeError(f"PyTorch {torch.__version__} has no {dtype} mixed precision on {device_type}: {e}") \
                from e


def _optimizer(torch, o, params, impl: dict | None = None, lr=None):
    """The ``torch.optim`` optimizer for the spec, every hyperparameter explicit; ``impl``: the implementation
    flags (default ``_FAST_IMPL``; ``{}``: torch's own default choice); ``lr``: a tensor learning rate (compiled
    update) instead of a float."""
    check_optimizer(DISPLAY, o.kind)
    impl = dict(_FAST_IMPL[o.kind] if impl is None else impl)
    lr = o.learning_rate if lr is None else lr
    if o.kind == "sgd":
        # Nesterov without momentum is plain SGD in the reference (torch would refuse the combination)
        return torch.optim.SGD(params, lr=lr, momentum=o.momentum, dampening=0.0, weight_decay=0.0,
                               nesterov=bool(o.nesterov and o.momentum), maximize=False, **impl)
    if o.kind in ("adam", "adamw"):
        cls = torch.optim.Adam if o.kind == "adam" else torch.optim.AdamW
        return cls(params, lr=lr, betas=(o.beta1, o.beta2), eps=o.epsilon,
                   weight_decay=o.weight_decay if o.kind == "adamw" else 0.0, amsgrad=False, maximize=False, **impl)
    return torch.optim.RMSprop(params, lr=lr, alpha=o.rho, eps=o.epsilon, weight_decay=0.0, momentum=0.0,
                               centered=False, maximize=False, **impl)


class TorchBackend(Backend):
    """PyTorch on the CPU or a CUDA GPU; modes ``eager`` and ``compile``; fp32, bf16 and fp16."""

    name = "torch"
    display = DISPLAY
    distribution = "torch"
    import_name = "torch"
    install_hint = "pip install 'isobench[torch]'  (torch==2.13.0)"
    trainer, private_trainer = TorchTrainer, TorchPrivateTrainer
    modes = ("eager", "compile")
    private_modes = {"opacus": TorchOpacusTrainer}
    precisions = ("fp32", "bf16", "fp16", "tf32")

    def setup(self, threads: int, device: str = "cpu") -> FrameworkSettings:
        self.settings = setup_torch(threads, device)
        # mode "compile" (its config is not imported here: torch._dynamo costs as much import time as torch):
        # Inductor's defaults unless the TORCHINDUCTOR_* variables change them; its code cache makes a repeat
        # compile faster; one graph for full and partial batches (module docstring)
        self.settings.extra.update(compile_backend="inductor", compile_batch_dim="dynamic")
        return self.settings

    def inference_model(self, workload: Workload, params: dict[str, np.ndarray]):
        """An ``nn.Module`` in eval mode on the CPU, float32, no parameter requiring a gradient, canonical in and out:
        NHWC images are permuted to the model's NCHW on the way in (int32 tokens widened to int64) and image
        outputs back to NHWC, as the trainer's ``logits`` does."""
        import torch
        from torch import nn

        model, out_shape = _Builder(params, torch.float32, torch.device("cpu")).sequential(
            workload.layers, tuple(workload.input_shape))
        tokens, image_in, image_out = workload.input_dtype == "int32", len(workload.input_shape) == 3, \
            len(out_shape) == 3

        class Canonical(nn.Module):
            def __init__(self):
                super().__init__()
                self.model = model

            def forward(self, x):
                if tokens:
                    x = x.long()
                elif image_in:
                    x = x.permute(0, 3, 1, 2)
                y = self.model(x)
                return y.permute(0, 2, 3, 1) if image_out else y

        module = Canonical().eval()
        for p in module.parameters():
            p.requires_grad_(False)
        return module


def _parallel_backend(torch) -> str | None:
    """The ATen parallel backend line of ``torch.__config__.parallel_info()`` (e.g. "OpenMP")."""
    for line in torch.__config__.parallel_info().splitlines():
        if line.startswith("ATen parallel backend:"):
            return line.split(":", 1)[1].strip()
    return None


def setup_torch(threads: int, device: str = "cpu") -> FrameworkSettings:
    """Thread settings, TF32 off and the CUDA context for ``device``; the settings in effect (the torch
    backend's, keras-torch's and the torch serving paths' set-up)."""
    import torch

    _check_device(torch, device)
    torch.set_num_threads(threads)
    interop_note = None
    try:
        torch.set_num_interop_threads(threads)
    except RuntimeError as e:  # only allowed once, before any inter-op parallel work has started
        interop_note = str(e)
    _tf32(torch)
    cuda = device == "cuda"
    if cuda:  # create the CUDA context here (torch does it lazily, at the first tensor): the import phase
        torch.empty(1, device="cuda")  # then covers device start-up in every framework, as JAX's does
        torch.cuda.synchronize()
    matmul_tf32, cudnn_tf32 = bool(torch.backends.cuda.matmul.allow_tf32), bool(torch.backends.cudnn.allow_tf32)
    return FrameworkSettings(
        version=torch.__version__, device=device, device_name=torch.cuda.get_device_name(0) if cuda else None,
        intra_op_threads=torch.get_num_threads(), inter_op_threads=torch.get_num_interop_threads(),
        threads_note=interop_note, tf32=matmul_tf32 or cudnn_tf32,
        matmul_precision=torch.get_float32_matmul_precision(), onednn=bool(torch.backends.mkldnn.enabled),
        determinism=torch.are_deterministic_algorithms_enabled(),
        companions={"cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version() if cuda else None},
        env=env_flags("OMP_NUM_THREADS", "MKL_NUM_THREADS", "CUDA_VISIBLE_DEVICES", "PYTORCH_CUDA_ALLOC_CONF",
                      "TORCHINDUCTOR_CACHE_DIR", "TORCHINDUCTOR_FX_GRAPH_CACHE", "TORCHINDUCTOR_AUTOGRAD_CACHE",
                      "TORCHINDUCTOR_COMPILE_THREADS", "TORCHINDUCTOR_MAX_AUTOTUNE", "TORCHINDUCTOR_FREEZING"),
        extra={"parallel_backend": _parallel_backend(torch), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
               "mkldnn_available": torch.backends.mkldnn.is_available(),
               "mkldnn_bf16_supported": bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()),
               "mkldnn_fp16_supported": bool(torch.ops.mkldnn._is_mkldnn_fp16_supported()),
               "mkl_available": torch.backends.mkl.is_available(), "cuda_matmul_allow_tf32": matmul_tf32,
               "cudnn_allow_tf32": cudnn_tf32})
