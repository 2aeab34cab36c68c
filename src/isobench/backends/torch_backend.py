"""PyTorch backend: the workload as ``torch.nn`` modules, a ``torch.optim`` optimizer, run eagerly.

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

Dropout uses ``nn.Dropout`` and therefore torch's default CPU generator, seeded with the workload seed in
``build`` (that generator is process-wide; the worker runs one trainer per process). Dropout is active in
``train_step`` only: ``evaluate``/``logits`` run in eval mode, and ``gradients`` runs BatchNorm in training
mode but with Dropout off, so the probe is deterministic and leaves the dropout RNG stream untouched
("changes nothing"); parity checks run with rate 0 anyway.

Optimizers are ``torch.optim`` SGD/Adam/AdamW/RMSprop with every hyperparameter explicit; their update
rules are the reference's (torch-form Nesterov, Adam with eps outside sqrt(v-hat), AdamW decay on every
parameter, RMSprop from a zero accumulator with eps outside the root). The per-step learning rate is written
into ``param_groups`` (no host round trip: it is a Python float); clipping is ``clip_grad_norm_``, whose
``min(1, clip / (norm + 1e-6))`` scale is the spec's and is applied without a host sync. The implementation
per optimizer is the fastest exact one on the CPU: fused kernels for SGD/Adam/AdamW, foreach for RMSprop
(``_FAST_IMPL``). The partial last batch needs nothing in eager mode.

torch is imported in :meth:`TorchBackend.setup` / :meth:`TorchBackend.build`, never at module import.
"""
from __future__ import annotations

from contextlib import contextmanager
from functools import cache
from typing import Any, Callable

import numpy as np

from ..data import Dataset
from ..workloads.spec import (AvgPool2D, BatchNorm, Conv2D, Dense, Dropout, Embedding, Flatten, GELU, GlobalAvgPool,
                              LayerNorm, LSTM, MaxPool2D, MultiHeadSelfAttention, PositionalEmbedding, ReLU, Reshape,
                              Residual, Tanh, Workload)
from .base import Backend, Trainer, check_build, env_flags

DISPLAY = "PyTorch"

# optimizer kind -> the fastest torch.optim implementation on the CPU (measured: fused 2-5x faster than the
# default per-tensor loop, foreach 1.5-3x)
_FAST_IMPL = {"sgd": {"fused": True}, "adam": {"fused": True}, "adamw": {"fused": True},
              "rmsprop": {"foreach": True}}  # RMSprop has no fused kernel


@cache
def _modules():
    """The small ``nn.Module`` classes the spec needs beyond torch.nn (defined on first use: lazy import)."""
    import torch
    import torch.nn.functional as F
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

    class PositionalEmbedding(nn.Module):
        def __init__(self, max_len, dim, dtype=None):
            super().__init__()
            self.weight = nn.Parameter(torch.zeros(max_len, dim, dtype=dtype))

        def forward(self, x):
            return x + self.weight[:x.shape[1]]

    class LSTM(nn.Module):
        """``nn.LSTM`` returning the whole sequence or the last hidden state."""

        def __init__(self, lstm, return_sequences):
            super().__init__()
            self.lstm, self.return_sequences = lstm, return_sequences

        def forward(self, x):
            out, (h, _) = self.lstm(x)
            return out if self.return_sequences else h[0]

    class SelfAttention(nn.Module):
        """Multi-head self-attention on (B, T, D): packed q|k|v projection, SDPA, output projection."""

        def __init__(self, dim, heads, causal, dtype=None):
            super().__init__()
            self.qkv, self.out = nn.Linear(dim, 3 * dim, dtype=dtype), nn.Linear(dim, dim, dtype=dtype)
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

    return dict(ToChannelsLast=ToChannelsLast, ToChannelsFirst=ToChannelsFirst, OnChannelsLast=OnChannelsLast,
                Reshape=Reshape, Mean=Mean, FlatBatchNorm=FlatBatchNorm, PositionalEmbedding=PositionalEmbedding,
                LSTM=LSTM, SelfAttention=SelfAttention, Residual=Residual)


class _Builder:
    """Spec layers -> ``nn.Module`` tree, loading the canonical parameters and recording their slots.

    A slot is ``canonical name -> (torch tensor, view)``: ``view(t)`` turns the tensor (or its gradient)
    into the canonical array. Per-example shapes are tracked canonically; rank-3 shapes (images) are NCHW
    tensors inside the model."""

    def __init__(self, params: dict[str, np.ndarray], dtype):
        import torch
        from torch import nn

        self.torch, self.nn, self.m = torch, nn, _modules()
        self.params, self.dtype = params, dtype  # every module is created in ``dtype``
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
            mod, shape = self.layer(layer, shape)
            mods.append(mod)
        return self.nn.Sequential(*mods), shape

    def layer(self, layer, shape: tuple[int, ...]):  # noqa: C901 - one branch per spec layer
        nn, m = self.nn, self.m
        image = len(shape) == 3  # an NCHW tensor inside the model
        if isinstance(layer, Dense):
            lin = nn.Linear(shape[-1], layer.units, dtype=self.dtype)
            self._load(f"{layer.name}/kernel", lin.weight, lambda t: t.T)
            self._load(f"{layer.name}/bias", lin.bias)
            return (m["OnChannelsLast"](lin) if image else lin), shape[:-1] + (layer.units,)
        if isinstance(layer, Conv2D):
            h, w, c = shape
            k, s, p = layer.kernel_size, layer.stride, layer.pad
            conv = nn.Conv2d(c, layer.filters, k, stride=s, padding=p, dtype=self.dtype)
            self._load(f"{layer.name}/kernel", conv.weight, lambda t: t.permute(2, 3, 1, 0))  # OIHW <-> HWIO
            self._load(f"{layer.name}/bias", conv.bias)
            return conv, ((h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1, layer.filters)
        if isinstance(layer, (MaxPool2D, AvgPool2D)):
            h, w, c = shape
            k, s = layer.pool, layer.stride or layer.pool
            pool = nn.MaxPool2d(k, s) if isinstance(layer, MaxPool2D) else nn.AvgPool2d(k, s)
            return pool, ((h - k) // s + 1, (w - k) // s + 1, c)
        if isinstance(layer, GlobalAvgPool):
            return m["Mean"]((2, 3) if image else range(1, len(shape))), (shape[-1],)
        if isinstance(layer, Flatten):
            flat = nn.Flatten()
            return (nn.Sequential(m["ToChannelsLast"](), flat) if image else flat), (int(np.prod(shape)),)
        if isinstance(layer, Reshape):
            new = tuple(layer.shape)
            mods = ([m["ToChannelsLast"]()] if image else []) + [m["Reshape"](new)] + \
                   ([m["ToChannelsFirst"]()] if len(new) == 3 else [])
            return (mods[0] if len(mods) == 1 else nn.Sequential(*mods)), new
        if isinstance(layer, ReLU):
            return nn.ReLU(), shape
        if isinstance(layer, GELU):
            return nn.GELU(approximate="none"), shape
        if isinstance(layer, Tanh):
            return nn.Tanh(), shape
        if isinstance(layer, Dropout):
            return nn.Dropout(layer.rate), shape
        if isinstance(layer, BatchNorm):
            cls = nn.BatchNorm2d if image else m["FlatBatchNorm"]
            bn = cls(shape[-1], eps=layer.epsilon, momentum=1.0 - layer.momentum, dtype=self.dtype)
            self._load(f"{layer.name}/gamma", bn.weight)
            self._load(f"{layer.name}/beta", bn.bias)
            self._load(f"{layer.name}/moving_mean", bn.running_mean, state=True)
            self._load(f"{layer.name}/moving_var", bn.running_var, state=True)
            return bn, shape
        if isinstance(layer, LayerNorm):
            ln = nn.LayerNorm(shape[-1], eps=layer.epsilon, dtype=self.dtype)
            self._load(f"{layer.name}/gamma", ln.weight)
            self._load(f"{layer.name}/beta", ln.bias)
            return (m["OnChannelsLast"](ln) if image else ln), shape
        if isinstance(layer, Embedding):
            emb = nn.Embedding(layer.vocab, layer.dim, dtype=self.dtype)
            self._load(f"{layer.name}/embeddings", emb.weight)
            return emb, shape + (layer.dim,)
        if isinstance(layer, PositionalEmbedding):
            pos = m["PositionalEmbedding"](layer.max_len, shape[1], self.dtype)
            self._load(f"{layer.name}/embeddings", pos.weight)
            return pos, shape
        if isinstance(layer, LSTM):
            lstm = nn.LSTM(shape[1], layer.units, batch_first=True, dtype=self.dtype)
            self._load(f"{layer.name}/kernel", lstm.weight_ih_l0, lambda t: t.T)
            self._load(f"{layer.name}/recurrent_kernel", lstm.weight_hh_l0, lambda t: t.T)
            self._load(f"{layer.name}/bias", lstm.bias_ih_l0)
            with self.torch.no_grad():  # the spec has one bias: torch's second one stays 0, untrained
                lstm.bias_hh_l0.zero_()
            lstm.bias_hh_l0.requires_grad_(False)
            out = (shape[0], layer.units) if layer.return_sequences else (layer.units,)
            return m["LSTM"](lstm, layer.return_sequences), out
        if isinstance(layer, MultiHeadSelfAttention):
            d = shape[1]
            att = m["SelfAttention"](d, layer.num_heads, layer.causal, self.dtype)
            for i, part in enumerate(("query", "key", "value")):  # packed rows: q | k | v
                rows = slice(i * d, (i + 1) * d)
                self._load(f"{layer.name}/{part}/kernel", att.qkv.weight, lambda t: t.T, part=rows)
                self._load(f"{layer.name}/{part}/bias", att.qkv.bias, part=rows)
            self._load(f"{layer.name}/output/kernel", att.out.weight, lambda t: t.T)
            self._load(f"{layer.name}/output/bias", att.out.bias)
            return att, shape
        if isinstance(layer, Residual):
            block, out = self.sequential(layer.block, shape)
            shortcut = self.sequential(layer.shortcut, shape)[0] if layer.shortcut else nn.Identity()
            return m["Residual"](block, shortcut), out
        raise NotImplementedError(f"{DISPLAY} backend has no layer {getattr(layer, 'kind', layer)!r}")


class TorchTrainer(Trainer):
    """The workload as an ``nn.Sequential``, its ``torch.optim`` optimizer and the data as CPU tensors.

    ``dtype`` (default float32) may be ``torch.float64`` to train the same model in double precision
    (not a mode; a possible second reference)."""

    def __init__(self, workload: Workload, params: dict[str, np.ndarray], data: Dataset, mode: str, dtype=None):
        import torch
        from torch import nn

        self._torch = torch
        self.dtype = dtype or torch.float32
        torch.manual_seed(workload.seed)  # nn.Dropout draws from the default CPU generator
        builder = _Builder(params, self.dtype)
        model, out_shape = builder.sequential(workload.layers, tuple(workload.input_shape))
        # Contiguous NCHW, not the channels_last memory format: channels_last is ~20-30% faster on resnet-mini
        # here, but its oneDNN convolution backward is less exact (step-0 gradients 9e-5 off the float64
        # reference instead of 8e-7, over the 1e-5 parity tolerance).
        self.model = model.train()
        self._slots, self._state, self._params = builder.slots, builder.state, builder.trainable
        self._dropouts = [mod for mod in self.model.modules() if isinstance(mod, nn.Dropout)]
        self._image_in, self._image_out = len(workload.input_shape) == 3, len(out_shape) == 3
        self._tokens = workload.input_dtype == "int32"
        self.forward = {"eager": self.model}[mode]  # later modes wrap the model (torch.compile)
        self.optimizer = _optimizer(torch, workload.optimizer, self._params)
        self._clip = workload.optimizer.clip_norm
        self.loss_fn = nn.CrossEntropyLoss(reduction="mean")
        self.x_train, self.x_test = self._input(data.x_train), self._input(data.x_test)
        # class indices must be int64 for CrossEntropyLoss; flattened with the logits for sequence targets
        self.y_train = torch.from_numpy(data.y_train.astype(np.int64))
        self.y_test = torch.from_numpy(data.y_test.astype(np.int64))

    def _input(self, x: np.ndarray):
        """Canonical numpy input -> model tensor: int64 tokens, or ``dtype`` features (images NCHW)."""
        t = self._torch.from_numpy(np.asarray(x))
        if self._tokens:
            return t.to(self._torch.int64)
        if self._image_in:
            t = t.permute(0, 3, 1, 2)
        return t.to(self.dtype).contiguous()

    def _loss(self, idx: np.ndarray):
        i = self._torch.from_numpy(np.asarray(idx, dtype=np.int64))  # tensor index: one gather op
        return self._xent(self.forward(self.x_train[i]), self.y_train[i])

    def _xent(self, logits, y):
        """Mean cross-entropy over the batch and, for sequence outputs, every position."""
        return self.loss_fn(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))

    def train_step(self, idx: np.ndarray, lr: float) -> float:
        for group in self.optimizer.param_groups:  # the schedule's rate for this step
            group["lr"] = float(lr)
        self.optimizer.zero_grad(set_to_none=True)
        loss = self._loss(idx)
        loss.backward()
        if self._clip is not None:
            self._torch.nn.utils.clip_grad_norm_(self._params, self._clip)
        self.optimizer.step()
        return loss.item()

    @contextmanager
    def _inference(self):
        """Eval mode without autograd, then back to training mode."""
        self.model.eval()
        try:
            with self._torch.inference_mode():
                yield
        finally:
            self.model.train()

    def evaluate(self) -> tuple[float, float]:
        with self._inference():
            logits = self.forward(self.x_test)
            loss = self._xent(logits, self.y_test).item()
            correct = int((logits.argmax(dim=-1) == self.y_test).sum())
        return loss, correct / self.y_test.numel()

    def logits(self, x: np.ndarray) -> np.ndarray:
        with self._inference():
            y = self.forward(self._input(x))
            return (y.permute(0, 2, 3, 1) if self._image_out else y).numpy().copy()

    def gradients(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        """Training-mode gradients with Dropout off; BatchNorm state restored; ``.grad`` untouched."""
        saved = [t.clone() for t, _ in self._state.values()]
        for d in self._dropouts:
            d.eval()
        try:
            grads = self._torch.autograd.grad(self._loss(idx), self._params, materialize_grads=True)
        finally:
            for d in self._dropouts:
                d.train()
            with self._torch.no_grad():
                for (t, _), s in zip(self._state.values(), saved):
                    t.copy_(s)
        by_param = {id(p): g for p, g in zip(self._params, grads)}
        return {name: _numpy(view(by_param[id(t)])) for name, (t, view) in self._slots.items()}

    def params(self) -> dict[str, np.ndarray]:
        return {name: _numpy(view(t.detach())) for name, (t, view) in {**self._slots, **self._state}.items()}


def _numpy(t) -> np.ndarray:
    return t.numpy().copy()  # copy: C order, detached from torch memory


def _optimizer(torch, o, params):
    """The ``torch.optim`` optimizer for the spec, every hyperparameter explicit (lr is reset every step)."""
    if o.kind not in _FAST_IMPL:
        raise NotImplementedError(f"{DISPLAY} backend has no optimizer {o.kind!r}")
    impl = dict(_FAST_IMPL[o.kind])
    if o.kind == "sgd":
        # Nesterov without momentum is plain SGD in the reference (torch would refuse the combination)
        return torch.optim.SGD(params, lr=o.learning_rate, momentum=o.momentum, dampening=0.0, weight_decay=0.0,
                               nesterov=bool(o.nesterov and o.momentum), maximize=False, **impl)
    if o.kind in ("adam", "adamw"):
        cls = torch.optim.Adam if o.kind == "adam" else torch.optim.AdamW
        return cls(params, lr=o.learning_rate, betas=(o.beta1, o.beta2), eps=o.epsilon,
                   weight_decay=o.weight_decay if o.kind == "adamw" else 0.0, amsgrad=False, maximize=False, **impl)
    return torch.optim.RMSprop(params, lr=o.learning_rate, alpha=o.rho, eps=o.epsilon, weight_decay=0.0, momentum=0.0,
                               centered=False, maximize=False, **impl)


class TorchBackend(Backend):
    """PyTorch on the CPU; mode ``eager``."""

    name = "torch"
    display = DISPLAY
    distribution = "torch"
    import_name = "torch"
    install_hint = "pip install 'isobench[torch]'  (torch==2.13.0)"
    modes = ("eager",)
    precisions = ("fp32",)

    def setup(self, threads: int, device: str = "cpu") -> dict[str, Any]:
        import torch

        torch.set_num_threads(threads)
        interop_note = None
        try:
            torch.set_num_interop_threads(threads)
        except RuntimeError as e:  # only allowed once, before any inter-op parallel work has started
            interop_note = str(e)
        return {
            "version": torch.__version__,
            "intra_op_threads": torch.get_num_threads(),
            "inter_op_threads": torch.get_num_interop_threads(),
            "inter_op_threads_error": interop_note,
            "parallel_backend": _parallel_backend(torch),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "mkldnn_available": torch.backends.mkldnn.is_available(),
            "mkldnn_enabled": bool(torch.backends.mkldnn.enabled),
            "mkl_available": torch.backends.mkl.is_available(),
            "float32_matmul_precision": torch.get_float32_matmul_precision(),
            "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
            **env_flags("OMP_NUM_THREADS", "MKL_NUM_THREADS"),
        }

    def build(self, workload: Workload, params: dict[str, np.ndarray], data: Dataset, mode: str,
              precision: str = "fp32", device: str = "cpu") -> Trainer:
        check_build(self, workload, mode, precision, device)
        return TorchTrainer(workload, params, data, mode)


def _parallel_backend(torch) -> str | None:
    """The ATen parallel backend line of ``torch.__config__.parallel_info()`` (e.g. "OpenMP")."""
    for line in torch.__config__.parallel_info().splitlines():
        if line.startswith("ATen parallel backend:"):
            return line.split(":", 1)[1].strip()
    return None
