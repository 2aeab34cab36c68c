"""Each framework's measured peak: sustained square-matmul throughput and large-copy bandwidth.

Method (``docs/efficiency.md``): the framework is set up as for a run (``Backend.setup(threads, device)``; numpy's
BLAS pool limited with threadpoolctl where installed). For each precision and each size n the product of two n x n
random matrices is called once to warm up (JAX compiles there), timed alone twice, then in loops of growing length
until one lasts ``min_time`` (calibration, once); then every **trial** (``trials`` separate timing passes over all
precisions, sizes and the copy, in this process: a neighbour's burst slows one pass, rarely all) times ``repeats``
loops of that many calls. Every call is synchronised (``block_until_ready``, ``cuda.synchronize``, TF's
``sync_devices``) before ``time.perf_counter`` is read, so no queued work is counted. Rate = 2 n^3 calls / seconds
(a multiply-add is 2 FLOPs); a precision's rate is the best loop over sizes, trials and repeats. Larger sizes are
skipped once one call takes over ``max_call`` seconds. Bandwidth: ``x + 1`` over a float32 array of ``copy_mib`` MiB
(numpy and torch into a preallocated output, JAX into its donated input, TensorFlow into a new tensor from its
allocator), timed the same way; bytes = read + write = 2 x the array's size.

A ``meter`` (the worker's :class:`~isobench.measure.contention.ContentionMeter`: ``start()``, ``stop()`` -> a record
with ``contended`` and ``to_dict()``, or None) watches each trial: a figure kept from a trial in which other processes
took the pinned CPUs makes the whole record ``contended``.

Designed to run in a fresh worker process: :func:`peak` takes (framework, threads, device) and returns a dict.
Frameworks are imported inside the functions.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Protocol

from ..errors import UserError
from ..results import FrameworkSettings

CPU_SIZES = (512, 1024, 2048)  # 256 was never the best size on the CPU (2-core EPYC: 6-180 GFLOP/s vs 100-330)
GPU_SIZES = (1024, 2048, 4096, 8192)
PRECISIONS = {"cpu": ("fp32", "bf16"), "cuda": ("fp32", "tf32", "bf16", "fp16")}
TRIALS, REPEATS, MIN_TIME = 2, 2, 0.1  # timing passes, loops per size and pass, seconds per loop


def matmul_gflops(n: int, calls: int, seconds: float) -> float:
    """GFLOP/s of ``calls`` n x n by n x n products in ``seconds``: 2 n^3 FLOPs each."""
    return 2 * n ** 3 * calls / seconds / 1e9


def copy_gbps(nbytes: int, calls: int, seconds: float) -> float:
    """GB/s (1e9 bytes) of ``calls`` passes reading and writing an array of ``nbytes``."""
    return 2 * nbytes * calls / seconds / 1e9


@dataclass(frozen=True)
class MatmulRate:
    """Sustained matmul throughput in one precision; ``gflops`` is ``None`` with ``error`` when not measured."""
    precision: str
    gflops: float | None = None
    size: int | None = None        # n of the best rate
    calls: int | None = None       # products per timed loop at that size
    seconds: float | None = None   # that loop's time
    by_size: dict[int, float] = field(default_factory=dict)  # best GFLOP/s per size
    error: str | None = None
    trial: int | None = None       # the trial (0-based) of the best loop
    by_trial: tuple[float, ...] = ()  # each trial's best GFLOP/s over sizes: how well the trials agreed


@dataclass(frozen=True)
class Peak:
    """One framework's measured peak on one device and thread count."""
    framework: str
    version: str | None
    device: str
    threads: int
    repeats: int
    min_time: float                # seconds, the shortest timed loop
    matmul: tuple[MatmulRate, ...]
    copy_gbps: float | None
    copy_bytes: int                # bytes of the copied array
    copy_calls: int | None = None
    copy_seconds: float | None = None
    copy_error: str | None = None
    settings: FrameworkSettings | None = None  # what the backend's setup() read back (numpy: its BLAS threads)
    trials: int = 1
    copy_trial: int | None = None  # the trial of the best copy loop
    contention: tuple[dict[str, Any] | None, ...] = ()  # per trial, the meter's record (None: not readable)
    contended: bool | None = None  # a kept figure came from a contended trial; None: no meter

    def rate(self, precision: str = "fp32") -> float | None:
        """The peak GFLOP/s in ``precision``, ``None`` where not measured."""
        return next((m.gflops for m in self.matmul if m.precision == precision), None)


class Meter(Protocol):
    def start(self) -> None: ...
    def stop(self) -> Any: ...  # an object with ``contended`` and ``to_dict()``, or None


def calibrate(fn: Callable[[], Any], sync: Callable[[Any], None], min_time: float,
              clock: Callable[[], float] = time.perf_counter) -> tuple[int, float]:
    """Warm up, time one call, grow the loop until it lasts ``min_time`` (as timeit's autorange, bounded).

    Returns (calls per loop, one call's seconds after warm-up)."""
    sync(fn())  # warm-up: compilation, allocation, first touch of the pages
    first = min(_loop(fn, sync, 1, clock), _loop(fn, sync, 1, clock))  # two: one may be slowed by a neighbour
    calls, seconds = 1, first
    for _ in range(30):
        if seconds >= min_time:
            break
        calls = max(2 * calls, math.ceil(1.2 * calls * min_time / seconds)) if seconds > 0 else 10 * calls
        seconds = _loop(fn, sync, calls, clock)
    return calls, first


def _loop(fn, sync, calls, clock) -> float:
    t0 = clock()
    for _ in range(calls):
        sync(fn())
    return clock() - t0


def _error(e: Exception) -> str:
    return f"{type(e).__name__}: {e}".splitlines()[0][:300]


@dataclass
class _Job:
    """One timed operation (a precision at a size, or the copy) across trials: its loops as (trial, seconds)."""
    fn: Callable[[], Any]
    calls: int
    first: float
    loops: list[tuple[int, float]] = field(default_factory=list)

    def time(self, trial: int, ops: "_Ops", repeats: int, clock) -> None:
        self.loops += [(trial, _loop(self.fn, ops.sync, self.calls, clock)) for _ in range(repeats)]

    def best(self, trial: int | None = None) -> tuple[int, float]:
        """(trial, seconds) of the fastest loop (of ``trial`` only, if given)."""
        return min((x for x in self.loops if trial is None or x[0] == trial), key=lambda x: x[1])


def _matmul_jobs(ops, precision, sizes, min_time, max_call, clock) -> tuple[dict[int, _Job], str | None]:
    """Calibrated products of ``precision`` per size (up to the first taking over ``max_call`` s), or the error of
    the first size that failed (an unsupported precision on this device is a result, not a crash)."""
    jobs = {}
    for n in sizes:
        try:
            fn = ops.matmul(n, precision)
            jobs[n] = _Job(fn, *calibrate(fn, ops.sync, min_time, clock))
        except Exception as e:  # noqa: BLE001
            return jobs, _error(e)
        if jobs[n].first > max_call:
            break
    return jobs, None


def _rate(precision: str, jobs: dict[int, _Job], error: str | None, trials: int) -> MatmulRate:
    if not any(j.loops for j in jobs.values()):
        return MatmulRate(precision, error=error or "not measured")
    by_size = {n: matmul_gflops(n, j.calls, j.best()[1]) for n, j in jobs.items() if j.loops}
    n = max(by_size, key=by_size.get)
    trial, seconds = jobs[n].best()
    by_trial = tuple(max(matmul_gflops(m, j.calls, j.best(t)[1]) for m, j in jobs.items()
                         if any(x[0] == t for x in j.loops)) for t in range(trials))
    return MatmulRate(precision, by_size[n], n, jobs[n].calls, seconds, by_size, trial=trial, by_trial=by_trial)


def measure(framework: str, threads: int, device: str = "cpu", *, sizes: tuple[int, ...] | None = None,
            precisions: tuple[str, ...] | None = None, repeats: int = REPEATS, trials: int = TRIALS,
            min_time: float = MIN_TIME, max_call: float = 2.0, copy_mib: int | None = None,
            clock: Callable[[], float] = time.perf_counter, meter: Meter | None = None) -> Peak:
    """Measure ``framework``'s peak on ``device`` with ``threads`` (see the module docstring)."""
    if framework not in _OPS:
        raise UserError(f"no peak measurement for {framework!r}; choose from: {', '.join(_OPS)}")
    if device not in PRECISIONS:
        raise UserError(f"unknown device {device!r}; choose from: {', '.join(PRECISIONS)}")
    ops, settings = _OPS[framework](threads, device)
    sizes = sizes or (GPU_SIZES if device == "cuda" else CPU_SIZES)
    precisions = precisions or tuple(p for p in PRECISIONS[device] if p in ops.precisions)
    matmul = {p: _matmul_jobs(ops, p, sizes, min_time, max_call, clock) for p in precisions}
    nbytes = (copy_mib or (1024 if device == "cuda" else 256)) * 2 ** 20
    try:
        fn = ops.stream(nbytes // 4)
        copy, copy_error = _Job(fn, *calibrate(fn, ops.sync, min_time, clock)), None
    except Exception as e:  # e.g. out of memory: recorded
        copy, copy_error = None, _error(e)
    windows = []
    for t in range(trials):
        if meter:
            meter.start()
        for job in (j for p in precisions for j in matmul[p][0].values()):
            job.time(t, ops, repeats, clock)
        if copy:
            copy.time(t, ops, repeats, clock)
        windows.append(meter.stop() if meter else None)
    rates = tuple(_rate(p, *matmul[p], trials) for p in precisions)
    copied = dict(copy_gbps=None, copy_error=copy_error)
    if copy:
        trial, seconds = copy.best()
        copied = dict(copy_gbps=copy_gbps(nbytes, copy.calls, seconds), copy_calls=copy.calls, copy_seconds=seconds,
                      copy_trial=trial)
    kept = {m.trial for m in rates if m.trial is not None} | ({copied["copy_trial"]} if copy else set())
    contended = any(windows[t] is not None and windows[t].contended for t in kept) if meter else None
    return Peak(framework, ops.version, device, threads, repeats, min_time, rates, copy_bytes=nbytes,
                settings=settings, trials=trials, contended=contended,
                contention=tuple(w.to_dict() if w is not None else None for w in windows), **copied)


def peak(framework: str, threads: int, device: str = "cpu", **options) -> dict[str, Any]:
    """:func:`measure` as a plain dict (JSON-ready, the settings in their JSON form), for a worker process."""
    p = measure(framework, threads, device, **options)
    return {**asdict(p), "settings": p.settings.to_dict() if p.settings else None}


# ---- per framework: operands, one product, one streaming pass, synchronisation ----------------------------------

@dataclass(frozen=True)
class _Ops:
    version: str
    precisions: tuple[str, ...]
    matmul: Callable[[int, str], Callable[[], Any]]  # (n, precision) -> one product on prepared operands
    stream: Callable[[int], Callable[[], Any]]       # float32 elements -> one x + 1 pass
    sync: Callable[[Any], None]


def _numpy(threads: int, device: str):
    import numpy as np

    if device != "cpu":
        raise UserError("numpy runs on the CPU only")
    try:  # BLAS threads: the worker's OMP/OPENBLAS/MKL_NUM_THREADS, and this limit where threadpoolctl is present
        from threadpoolctl import threadpool_limits
        threadpool_limits(threads)
        note = f"threadpoolctl limit {threads}"
    except ImportError:
        note = "BLAS threads follow OMP/OPENBLAS/MKL_NUM_THREADS"
    rng = np.random.default_rng(0)

    def matmul(n, precision):
        if precision != "fp32":
            raise ValueError(f"numpy has no {precision} matmul")
        a, b = rng.standard_normal((n, n), dtype=np.float32), rng.standard_normal((n, n), dtype=np.float32)
        out = np.empty_like(a)
        return lambda: np.matmul(a, b, out=out)

    def stream(n):
        x, out = np.ones(n, np.float32), np.empty(n, np.float32)
        return lambda: np.add(x, 1.0, out=out)

    return _Ops(np.__version__, ("fp32",), matmul, stream, lambda _: None), FrameworkSettings(
        version=np.__version__, device=device, threads_note=note)


def _torch(threads: int, device: str):
    import torch

    from . import get_backend
    settings = get_backend("torch").setup(threads, device)
    dev, gen = torch.device(device), torch.Generator().manual_seed(0)
    dtypes = {"fp32": torch.float32, "tf32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    sync = (lambda _: torch.cuda.synchronize()) if device == "cuda" else (lambda _: None)

    def matmul(n, precision):
        torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"  # setup turned it off; fp32 keeps it off
        a, b = (torch.randn(n, n, generator=gen).to(dev, dtypes[precision]) for _ in range(2))
        out = torch.empty_like(a)
        return lambda: torch.mm(a, b, out=out)

    def stream(n):
        x, out = torch.ones(n, device=dev), torch.empty(n, device=dev)
        return lambda: torch.add(x, 1.0, out=out)

    return _Ops(torch.__version__, tuple(dtypes), matmul, stream, sync), settings


def _tensorflow(threads: int, device: str):
    import tensorflow as tf

    from . import get_backend
    settings = get_backend("tensorflow").setup(threads, device)
    name = "/GPU:0" if device == "cuda" else "/CPU:0"
    dtypes = {"fp32": tf.float32, "tf32": tf.float32, "bf16": tf.bfloat16, "fp16": tf.float16}
    gen = tf.random.Generator.from_seed(0)

    def matmul(n, precision):
        tf.config.experimental.enable_tensor_float_32_execution(precision == "tf32")
        with tf.device(name):
            a, b = (tf.cast(gen.normal((n, n)), dtypes[precision]) for _ in range(2))

        def run():
            with tf.device(name):
                return tf.linalg.matmul(a, b)
        return run

    def stream(n):
        with tf.device(name):
            x = tf.ones((n,), tf.float32)

        def run():
            with tf.device(name):
                return x + 1.0
        return run

    return _Ops(tf.__version__, tuple(dtypes), matmul, stream,
                lambda _: tf.test.experimental.sync_devices()), settings


def _jax(threads: int, device: str):
    import jax
    import jax.numpy as jnp

    from . import get_backend
    settings = get_backend("jax").setup(threads, device)
    dev = jax.devices("gpu" if device == "cuda" else "cpu")[0]
    dtypes = {"fp32": jnp.float32, "tf32": jnp.float32, "bf16": jnp.bfloat16, "fp16": jnp.float16}
    key = jax.random.PRNGKey(0)

    def matmul(n, precision):
        a, b = (jax.device_put(jax.random.normal(k, (n, n)).astype(dtypes[precision]), dev)
                for k in jax.random.split(key))
        # fp32 at full precision (as the backend's runs); tf32 by request; bf16/fp16 at the inputs' precision
        mode = {"fp32": "highest", "tf32": "tensorfloat32"}.get(precision)
        f = jax.jit(lambda a, b: jnp.matmul(a, b, precision=mode))
        return lambda: f(a, b)

    def stream(n):
        # donated: the output reuses the input's buffer, as numpy's and torch's out=, instead of a fresh
        # allocation (and its page faults) per call
        f, state = jax.jit(lambda x: x + 1.0, donate_argnums=0), [jax.device_put(jnp.ones((n,), jnp.float32), dev)]

        def run():
            state[0] = f(state[0])
            return state[0]
        return run

    return _Ops(jax.__version__, tuple(dtypes), matmul, stream, lambda out: out.block_until_ready()), settings


_OPS = {"numpy": _numpy, "torch": _torch, "tensorflow": _tensorflow, "jax": _jax}
FRAMEWORKS = tuple(_OPS)  # the frameworks peak() measures, in order
