"""The versioned result model and its JSON form.

A :class:`RunSpec` (frozen) identifies one cell of the plan; a :class:`RunRecord` holds what one worker
process measured, raw per-step samples included. Failures are records too (``status`` other than
``"ok"``). Statistics are derived from these records, never stored as the only copy.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import MISSING, Field, asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from .errors import UserError
from .measure.contention import is_contended

# 1: lost/replaces inside a run's environment; 2: real fields of the run (see migrate_run_v1); 3: counted FLOPs,
# modelled bytes and energy in the metrics, the session's measured peaks (new fields only: older files read as is);
# 4: the privacy guarantee of every DP-SGD workload (a new field: older files read with it empty)
# 5: deploy sessions (``deploys`` and ``weights``; new fields only)
# 6: a run's optimizer implementation (``optimizer``; absent: "neutral"), the time to a trained model, the contention
# of its CPUs (``contended`` and the figures in its metrics), the harness's own cost (environment), warm-up runs
# (negative repeats), the PLD epsilon beside the RDP one and the machine peak's records (new fields only)
# 7: serving sessions (``loads``: a scenario served under LoadGen per record; new fields only)
SCHEMA_VERSION = 7

# status values: "ok" or a failure
OK = "ok"
FAILED = "failed"          # worker exited non-zero or reported an exception
CRASHED = "crashed"        # worker killed by a signal (segfault, SIGKILL, ...)
TIMEOUT = "timeout"        # exceeded --timeout; killed with its process group
DIVERGED = "diverged"      # loss became NaN or Inf
UNAVAILABLE = "unavailable"  # framework not installed or failed to import
OUT_OF_MEMORY = "out_of_memory"  # resident memory exceeded --max-memory; killed with its process group
STATUSES = (OK, FAILED, CRASHED, TIMEOUT, DIVERGED, UNAVAILABLE, OUT_OF_MEMORY)


@dataclass(frozen=True)
class Cell:
    """One compared configuration of a framework: a column of the table, measured ``repeats`` times.
    ``optimizer``: the optimizer implementation (``library`` or ``neutral``, backends.base.OPTIMIZER_IMPLS)."""
    framework: str
    mode: str
    precision: str = "fp32"
    optimizer: str = "neutral"

    def __str__(self) -> str:  # "torch/eager", "jax/jit/bf16/library" (named as in stats.Group.label)
        return f"{self.framework}/{self.mode}" + "".join(f"/{x}" for x, plain in ((self.precision, "fp32"),
                                                                                  (self.optimizer, "neutral"))
                                                         if x != plain)


@dataclass(frozen=True)
class RunSpec:
    """Identity of one measured cell: what ran, in which mode, which repeat."""
    workload: str
    framework: str
    mode: str
    repeat: int
    threads: int
    device: str = "cpu"
    precision: str = "fp32"
    optimizer: str = "neutral"  # the optimizer implementation; records without one ran isobench's own rules

    @property
    def label(self) -> str:
        return f"{self.framework}/{self.mode}"

    @property
    def warmup(self) -> bool:
        """A warm-up process of ``--warmup`` (repeats -1, -2, ...): run before the measured repeats, never counted."""
        return self.repeat < 0

    @property
    def repeat_label(self) -> str:
        """``"repeat 3"`` (1-based) or ``"warm-up 1"``."""
        return f"warm-up {-self.repeat}" if self.warmup else f"repeat {self.repeat + 1}"

    @property
    def cell(self) -> Cell:
        return Cell(self.framework, self.mode, self.precision, self.optimizer)


@dataclass
class Metrics:
    """What one worker measured. Times in seconds, memory in bytes, accuracy as a fraction."""
    import_s: float
    build_s: float
    first_step_s: float             # includes trace/compile where the framework does it lazily
    compile_s: float                # first_step_s minus the steady median step (>= 0)
    step_time_median_s: float       # steady state: full batches after the first step
    step_time_p10_s: float
    step_time_p90_s: float
    train_time_s: float             # first data touch to the end of the last epoch, evaluation excluded
    eval_s: float                   # one pass over the test split after training
    throughput_samples_s: float     # training samples / train_time_s
    test_accuracy: float
    test_loss: float
    epoch_losses: list[float]       # mean training loss of each epoch
    rss_after_import_bytes: int
    train_peak_rss_bytes: int | None  # VmHWM after a clear_refs reset right after import
    process_peak_rss_bytes: int | None  # ru_maxrss from the parent's wait4
    device_peak_bytes: int | None
    steps: int
    samples: int
    step_times_s: list[float] = field(default_factory=list)  # every step, first included
    # evaluation on the test split after every epoch (kept out of training time): time to target
    eval_total_s: float | None = None                # every per-epoch evaluation; eval_s is the last one
    epoch_test_losses: list[float] = field(default_factory=list)
    epoch_test_accuracies: list[float] = field(default_factory=list)
    epoch_train_s: list[float] = field(default_factory=list)  # cumulative training time at each epoch's end
    metric: str = "accuracy"                         # the workload's test metric: accuracy, or loss (per token)
    target: float | None = None                      # the workload's target for that metric
    time_to_target_s: float | None = None            # training time until the target was first met; None: not reached
    best_test_metric: float | None = None            # best per-epoch test metric (highest accuracy / lowest loss)
    # counted from the workload spec (isobench.workloads.flops), not measured: one full-batch training step
    counted_flops_per_step: int | None = None        # forward + backward + optimizer update, FLOPs
    counted_matmul_flops_per_step: int | None = None  # its matmul part (the MFU numerator)
    modelled_bytes_per_step: int | None = None       # a modelled lower bound of the step's memory traffic, bytes
    # measured by hardware counters over the training loop (per-epoch evaluations included), or None with the reason
    energy_train_j: float | None = None              # joules
    energy_per_sample_j: float | None = None         # energy_train_j / samples
    energy_source: str | None = None                 # counters read, e.g. "rapl:package-0", "nvml:gpu0"
    energy_reason: str | None = None                 # why a counter could not be read; never an estimate
    # what a user's cold script waits for, of the framework's doing: import_s + build_s + train_time_s (first step
    # included); the harness's own start-up and bookkeeping are excluded and stated in the WorkerSettings
    time_to_trained_s: float | None = None
    # the machine's state over the measured window (framework import to the end of training; measure.contention):
    # CPU seconds other processes ran on the worker's pinned CPUs, seconds the hypervisor stole from them, their sum
    # as a fraction of the window's CPU time, and the 1-minute load average at the window's start and end
    other_cpu_s: float | None = None
    steal_cpu_s: float | None = None
    contention: float | None = None
    load_before: float | None = None
    load_after: float | None = None

    @property
    def contended(self) -> bool:
        """Measured while other processes (or the hypervisor) took more than
        :data:`~isobench.measure.contention.CONTENTION_FRACTION` of the worker's CPUs: not comparable."""
        return self.contention is not None and self.other_cpu_s is not None and is_contended(
            self.contention, self.other_cpu_s + (self.steal_cpu_s or 0.0))

    @property
    def achieved_flops_s(self) -> float | None:
        """Counted FLOPs of a full-batch step / the measured steady median step time (FLOP/s)."""
        return _per_step(self.counted_flops_per_step, self.step_time_median_s)

    @property
    def achieved_matmul_flops_s(self) -> float | None:
        """The matmul part of :attr:`achieved_flops_s` (FLOP/s): the numerator of % of peak (MFU)."""
        return _per_step(self.counted_matmul_flops_per_step, self.step_time_median_s)

    @property
    def intensity(self) -> float | None:
        """Modelled arithmetic intensity of a step: counted FLOPs / modelled bytes (FLOPs per byte)."""
        return _per_step(self.counted_flops_per_step, self.modelled_bytes_per_step)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Metrics":
        """Metrics from their JSON form; one stored before ``time_to_trained_s`` existed gets it from its phases
        (the same sum a new worker records)."""
        known = _known(cls, d)
        if "time_to_trained_s" not in d and None not in (phases := [known.get(k) for k in (
                "import_s", "build_s", "train_time_s")]):
            known["time_to_trained_s"] = sum(phases)
        return cls(**known)


def _per_step(count: float | None, per: float | None) -> float | None:
    return count / per if count is not None and per else None


def _known(cls: type, d: dict[str, Any]) -> dict[str, Any]:
    """The items of ``d`` that are fields of the dataclass ``cls`` (a key another version wrote is skipped)."""
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in d.items() if k in names}


@dataclass
class ThreadSettings:
    """What the worker pinned before importing anything: the thread count, the CPUs it may run on and the
    thread variables it set (OMP_NUM_THREADS, ...)."""
    threads: int
    affinity: list[int] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class FrameworkSettings:
    """What a backend's ``setup()`` read back from its framework once its settings were in effect: the fairness
    manifest's facts as typed fields, the framework-specific rest in ``extra``. ``None``: the framework has no such
    setting (JAX's thread counts, PyTorch's XLA) or did not say.

    JSON form (:meth:`to_dict`): every field by its name. A session stored before this record (schema 6 and older)
    holds one flat dict per run whose keys differ by framework (``cuda_device_name``, ``gpu_name`` or
    ``device_name``; ``tf32`` or ``tensor_float_32``; ...): :meth:`from_dict` maps them onto the fields (the one
    place that knows the old keys) and keeps the dict as :attr:`stored`, which :meth:`to_dict` gives back unchanged,
    so an old session exports byte for byte as before."""
    version: str | None = None              # the framework's version (Keras: keras's; its framework's: companions)
    device: str | None = None               # "cpu" or "cuda", as set up
    device_name: str | None = None          # the GPU's name as the framework reads it; None on the CPU
    intra_op_threads: int | None = None     # threads one operation may use, read back from the framework
    inter_op_threads: int | None = None     # threads running independent operations at once, read back
    threads_note: str | None = None         # why the counts are absent or not as set (JAX has no knob; a refused set)
    tf32: bool | None = None                # float32 matmuls and convolutions allowed on TF32 tensor cores (GPU only)
    matmul_precision: str | None = None     # the framework's float32 matmul precision setting ("highest": full fp32)
    onednn: bool | None = None              # oneDNN (MKL-DNN) CPU kernels in use
    # XLA and JIT switches as set: XLA's environment variables, TensorFlow's auto-clustering, Keras's jit_compile as
    # resolved (None: unset); None: the framework has no XLA (PyTorch)
    xla: dict[str, Any] | None = None
    determinism: bool | None = None         # deterministic kernels required (torch's algorithms, TF's op determinism)
    # versions of companion libraries by name: jaxlib, CUDA and cuDNN of a torch build, Keras's framework (None: absent)
    companions: dict[str, str | None] = field(default_factory=dict)
    env: dict[str, str | None] = field(default_factory=dict)  # other performance variables as set; None: unset
    extra: dict[str, Any] = field(default_factory=dict)        # the framework-specific rest, as read back
    stored: dict[str, Any] | None = field(default=None, repr=False, compare=False)  # an old session's dict, as is

    # field -> the keys a schema-6 dict held it under (torch, TensorFlow, JAX, Keras, numpy spelt them differently)
    _OLD_KEYS = {"device_name": ("cuda_device_name", "gpu_name", "device_name"),
                 "threads_note": ("threads_note", "inter_op_threads_error", "threads_error", "note"),
                 "tf32": ("tf32", "tensor_float_32", "allow_tf32"),
                 "matmul_precision": ("float32_matmul_precision", "default_matmul_precision"),
                 "onednn": ("mkldnn_enabled", "onednn_enabled"),
                 "determinism": ("deterministic_algorithms", "op_determinism")}

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: every field (an old session's dict as it was stored)."""
        if self.stored is not None:
            return self.stored
        return {f.name: dict(v) if isinstance(v := getattr(self, f.name), dict) else v
                for f in fields(self) if f.name != "stored"}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "FrameworkSettings":
        """Settings from their JSON form, or from a schema-6 flat dict (no ``extra`` key), mapped field by field:
        the keys above, ``version``/``device``/thread counts by name, ``*_version`` as companions (Keras's
        ``framework_version`` named by its ``keras_backend``), XLA variables, ``jit_auto_clustering`` and
        ``jit_compile`` as ``xla``, other upper-case keys as ``env``, the rest as ``extra``."""
        if "extra" in d:
            return cls(**{k: v for k, v in _known(cls, d).items() if k != "stored"})
        rest, typed = dict(d), {}
        for name in ("version", "device", "intra_op_threads", "inter_op_threads"):
            typed[name] = rest.pop(name, None)
        for name, keys in cls._OLD_KEYS.items():
            found = [rest.pop(k) for k in keys if k in rest]
            typed[name] = next((v for v in found if v is not None), None)
        xla = {k: rest.pop(k) for k in list(rest) if "XLA" in k or k in ("jit_auto_clustering", "jit_compile")}
        companions = {k.removesuffix("_version"): rest.pop(k) for k in list(rest) if k.endswith("_version")}
        companions.pop("keras", None)  # Keras's own version: ``version``
        if "framework" in companions:  # Keras: its framework's version
            companions[rest.get("keras_backend") or "framework"] = companions.pop("framework")
        env = {k: rest.pop(k) for k in list(rest) if k.isupper()}
        return cls(**typed, xla=xla or None, companions=companions, env=env, extra=rest, stored=d)


@dataclass
class WorkerSettings(Mapping):
    """What one worker ran under: isobench's own bookkeeping and the framework's settings as typed fields.

    A field is ``None`` where the worker did not get that far (or, for ``host`` and ``node``, ran locally). It
    also reads as its JSON form (``settings["framework"]``, ``items()``), so a report can list every setting."""
    threads: ThreadSettings | None = None
    pid: int | None = None
    seed: int | None = None                  # of the weights, orders and dropout (--seeds varies it per repeat)
    framework: FrameworkSettings | None = None  # what the backend's setup() read back: version, threads, flags
    rss_before_import_bytes: int | None = None
    peak_reset: bool | None = None           # whether VmHWM could be reset after import (else it spans the process)
    gc_frozen_objects: int | None = None     # objects moved out of the collector's reach before the timed loop
    # the harness's own cost, kept out of every figure and stated: seconds from the launcher's spawn to the framework
    # import (interpreter start, isobench's imports, reading the inputs), and isobench's work between the import's
    # start and the end of training that is not import, build or training (weight check, gc freeze, evaluations)
    harness_s: float | None = None
    harness_between_s: float | None = None
    host: dict[str, Any] | None = None       # --executor ray: the node's environment record
    node: dict[str, Any] | None = None       # --executor ray: node id, hostname, IP, niceness
    runtime: str | None = None               # a deployment worker: the runtime that loaded the artifact
    runtime_version: str | None = None
    exported: dict[str, Any] | None = None   # an export worker: the artifact it wrote (path, quantize, details)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: fields that are set, in field order."""
        return {f.name: asdict(v) if isinstance(v, ThreadSettings) else v.to_dict() if isinstance(
            v, FrameworkSettings) else v for f in fields(self) if (v := getattr(self, f.name)) is not None}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "WorkerSettings":
        known = _known(cls, d)
        if isinstance(known.get("threads"), dict):
            known["threads"] = ThreadSettings(**_known(ThreadSettings, known["threads"]))
        if isinstance(known.get("framework"), dict):
            known["framework"] = FrameworkSettings.from_dict(known["framework"])
        return cls(**known)

    def __getitem__(self, key: str) -> Any:
        return self.to_dict()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.to_dict())

    def __len__(self) -> int:
        return len(self.to_dict())


def migrate_run_v1(d: dict[str, Any]) -> dict[str, Any]:
    """A run in its version-1 JSON form -> version 2: the executor's marks move out of the environment into
    ``lost`` (was ``environment["lost_by_executor"]``) and ``replaces`` (was ``environment["replaces"]``)."""
    env = dict(d.get("environment") or {})
    return {**d, "lost": env.pop("lost_by_executor", None), "replaces": env.pop("replaces", None),
            "environment": env}


@dataclass
class Record:
    """What one worker process left, whatever its kind: its identity (``spec``), how it ended, what it measured
    (``metrics``, the kind's own type) and what it ran under. Failures are records too."""
    spec: Any
    status: str
    order: int = 0                  # position in the interleaved plan
    wall_s: float | None = None     # process start to exit, seen by the parent
    exit_code: int | None = None
    signal: int | None = None
    error: str | None = None        # one line: why it failed
    stderr_tail: str | None = None
    metrics: Any = None
    environment: WorkerSettings = field(default_factory=WorkerSettings)
    # The executor lost the unit before its worker could report (a Ray node died): the exception's name. A failure
    # of the infrastructure, not of the framework, so ``--resume`` runs the unit again and replaces this record.
    lost: str | None = None
    replaces: str | None = None     # a --resume rerun: "STATUS record: ERROR" of the lost record it replaced

    @property
    def ok(self) -> bool:
        return self.status == OK

    @property
    def warmup(self) -> bool:
        """A warm-up process (``--warmup``): run and stored, never counted in the statistics."""
        return self.spec.repeat < 0

    @staticmethod
    def common_from_dict(d: Mapping[str, Any]) -> dict[str, Any]:
        """The fields every kind of record stores alike, read back from its stored dict (keyword arguments)."""
        return {"status": d["status"], "order": d.get("order", 0),
                **{k: d.get(k) for k in ("wall_s", "exit_code", "signal", "error", "stderr_tail", "lost", "replaces")},
                "environment": WorkerSettings.from_dict(d.get("environment") or {})}

    @classmethod
    def failed(cls, spec: Any, status: str, error: str, **common: Any) -> "Record":
        """A record without measurements: a worker that ended without a result, or a unit refused without one."""
        return cls(spec=spec, status=status, error=error, **common)


@dataclass
class RunRecord(Record):
    """One training worker process (a cell of the plan)."""
    spec: RunSpec
    metrics: Metrics | None = None
    fingerprints: dict[str, str] = field(default_factory=dict)  # hashes of initial weights, data, orders

    @property
    def contended(self) -> bool | None:
        """Measured under load (:attr:`Metrics.contended`); ``None`` where no contention was measured."""
        return None if self.metrics is None or self.metrics.contention is None else self.metrics.contended

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self.spec)
        d.update({k: getattr(self, k) for k in ("status", "order", "wall_s", "exit_code", "signal", "error",
                                                 "stderr_tail", "lost", "replaces", "contended")})
        return {**d, "environment": self.environment.to_dict(), "fingerprints": self.fingerprints,
                "metrics": asdict(self.metrics) if self.metrics else None}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunRecord":
        """A run in the current JSON form (an older one goes through :meth:`ResultSet.from_dict`)."""
        spec = RunSpec(**{f.name: d[f.name] for f in fields(RunSpec) if f.name in d})
        m = d.get("metrics")
        return cls(spec=spec, metrics=Metrics.from_dict(m) if m else None, fingerprints=d.get("fingerprints") or {},
                   **cls.common_from_dict(d))


# ---- the session's records of its parity checks, peaks and privacy guarantees, whose JSON forms grew over versions

_FORM = ("extra", "stored")  # StoredRecord's own fields: how the record was stored, not what it holds
R = TypeVar("R", bound="StoredRecord")


def _default(f: Field) -> Any:
    """A field's default value (MISSING for a required field)."""
    return f.default if f.default is not MISSING else \
        f.default_factory() if f.default_factory is not MISSING else MISSING


@dataclass(frozen=True)
class StoredRecord:
    """Base of a session record whose JSON form grew over versions (parity, peaks, privacy): typed fields for what
    isobench reads, and the form it was stored in, so that a stored session exports byte-identical.

    :meth:`from_dict` reads any stored form: a key it lacks takes the field's default, a key this version does not
    know is kept in ``extra``, and the keys' order in ``stored``. :meth:`to_dict` writes those keys back in that
    order, then every field set since to a value other than its default (``reused`` on a reused peak); a record made
    here (``stored`` None) writes its whole current form (:meth:`_json`)."""
    extra: dict[str, Any] = field(default_factory=dict, kw_only=True, repr=False)
    stored: tuple[str, ...] | None = field(default=None, kw_only=True, repr=False, compare=False)

    DERIVED: ClassVar[tuple[str, ...]] = ()  # JSON keys computed from the fields (a verdict): written, never kept

    @classmethod
    def from_dict(cls: type[R], d: Mapping[str, Any]) -> R:
        own = {f.name for f in fields(cls)} - set(_FORM)
        return cls(**cls._typed({k: v for k, v in d.items() if k in own}),
                   extra={k: v for k, v in d.items() if k not in own and k not in cls.DERIVED}, stored=tuple(d))

    @classmethod
    def from_dicts(cls: type[R], d: Mapping[str, Mapping[str, Any]] | None) -> dict[str, R]:
        """A session's records by key (workload or framework) from their JSON form; ``None`` (a session older than
        them) reads as none."""
        return {k: cls.from_dict(v) for k, v in (d or {}).items()}

    @classmethod
    def _typed(cls, known: dict[str, Any]) -> dict[str, Any]:
        """The stored values of the fields as they are typed (nested records); as stored by default."""
        return known

    def _json(self) -> dict[str, Any]:
        """The current JSON form, every key in its order; by default the fields in theirs."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in _FORM}

    def to_dict(self) -> dict[str, Any]:
        full = {**self._json(), **self.extra}
        if self.stored is None:
            return full
        out = {k: full[k] for k in self.stored if k in full}
        return out | {f.name: full[f.name] for f in fields(self) if f.name not in out and f.name in full
                      and getattr(self, f.name) != _default(f)}


def to_dicts(records: Mapping[str, StoredRecord]) -> dict[str, dict[str, Any]]:
    """The JSON form of a session's records by key (:meth:`StoredRecord.from_dicts` reads it back)."""
    return {k: r.to_dict() for k, r in records.items()}


@dataclass(frozen=True)
class ParityCheck(StoredRecord):
    """One quantity a parity check compares: the largest absolute difference seen and the absolute tolerance it must
    meet, in the quantity's unit (logits, gradients, losses in nats, accuracy as a fraction)."""
    name: str                        # "initial logits", "epoch mean loss between frameworks (library)"
    max_abs_diff: float
    tolerance: float
    DERIVED = ("passed",)

    @property
    def passed(self) -> bool:
        return bool(self.max_abs_diff <= self.tolerance)

    def _json(self) -> dict[str, Any]:
        return {"name": self.name, "max_abs_diff": self.max_abs_diff, "tolerance": self.tolerance,
                "passed": self.passed}


@dataclass(frozen=True)
class FrameworkParity(StoredRecord):
    """One cell's part of a parity check: how its worker ended and its checks against the float64 reference (none
    when the worker did not finish)."""
    framework: str
    mode: str
    status: str                      # the worker's status (STATUSES)
    error: str | None = None         # one line: why the worker did not finish
    checks: tuple[ParityCheck, ...] = ()
    precision: str = "fp32"          # sessions before the precision axis: fp32
    optimizer: str = "neutral"       # sessions before the optimizer axis: isobench's own update rules
    DERIVED = ("passed",)

    @property
    def passed(self) -> bool:
        return self.status == OK and all(c.passed for c in self.checks)

    @property
    def cell(self) -> Cell:
        return Cell(self.framework, self.mode, self.precision, self.optimizer)

    @classmethod
    def _typed(cls, known: dict[str, Any]) -> dict[str, Any]:
        return {**known, "checks": tuple(map(ParityCheck.from_dict, known.get("checks", ())))}

    def _json(self) -> dict[str, Any]:
        return {"framework": self.framework, "mode": self.mode, "precision": self.precision,
                "optimizer": self.optimizer, "status": self.status, "error": self.error, "passed": self.passed,
                "checks": [c.to_dict() for c in self.checks]}


@dataclass(frozen=True)
class ParityResult(StoredRecord):
    """A workload's parity check as a session keeps it (``ResultSet.parity[workload]``, made by
    :func:`isobench.runner.parity.parity_summary`): per cell its checks against the float64 reference, and the
    checks between the cells of each precision and optimizer implementation. The verdict is derived: every cell
    finished within every tolerance, and so did the checks between them."""
    workload: str
    reference_accuracy: float        # the reference's test metric (:attr:`metric`): a fraction, or nats
    frameworks: tuple[FrameworkParity, ...] = ()
    cross: tuple[ParityCheck, ...] = ()  # between cells: the largest pairwise difference
    DERIVED = ("passed",)

    @property
    def passed(self) -> bool:
        return bool(self.frameworks) and all(f.passed for f in self.frameworks) and all(c.passed for c in self.cross)

    @property
    def metric(self) -> str | None:
        """What :attr:`reference_accuracy` holds, "test accuracy" or "test loss": the name of the cells' last check
        (the test metric's); ``None`` when no cell was compared."""
        return next((f.checks[-1].name for f in self.frameworks if f.checks), None)

    @classmethod
    def _typed(cls, known: dict[str, Any]) -> dict[str, Any]:
        return {**known, "frameworks": tuple(map(FrameworkParity.from_dict, known.get("frameworks", ()))),
                "cross": tuple(map(ParityCheck.from_dict, known.get("cross", ())))}

    def _json(self) -> dict[str, Any]:
        return {"workload": self.workload, "passed": self.passed, "reference_accuracy": self.reference_accuracy,
                "frameworks": [f.to_dict() for f in self.frameworks], "cross": [c.to_dict() for c in self.cross]}


def peak_framework(framework: str) -> str:
    """The framework whose measured peak matmul rate is a run of ``framework``'s own: Keras runs on its backend's
    kernels (keras-torch: torch's)."""
    return framework.removeprefix("keras-")


LOW_MATMUL_EFFICIENCY = 0.7  # a framework's peak rate under 70% of the machine peak: measured again, then flagged


@dataclass(frozen=True)
class PeakRecord(StoredRecord):
    """One framework's measured peak as a session and the peaks table keep it: the record of
    :func:`isobench.runner.peak.measure_peak` (backends.peak's measurement, its reuse key, when, the nominal peak), or
    the error that kept it from being measured. The fields are what isobench reads; the measurement's other figures
    (sizes, calls, seconds, settings, trials, ...) stay in ``extra`` as stored. A field older records lack is
    absent (its default)."""
    framework: str
    error: str | None = None         # not measured (not installed, the worker failed); then the only other field
    version: str | None = None       # the installed distribution's; with the next four the reuse key (PEAK_KEY)
    device: str | None = None
    threads: int | None = None
    host: str | None = None
    cpu_model: str | None = None
    measured_at: str | None = None   # ISO 8601, UTC
    matmul: list[dict[str, Any]] = field(default_factory=list)  # per precision: precision, gflops, size, calls, ...
    copy_gbps: float | None = None   # large-copy bandwidth, GB/s of bytes read + written
    contention: list[dict[str, Any] | None] = field(default_factory=list)  # per trial: measure.contention's record
    contended: bool | None = None    # a kept figure came from a contended trial: never reused; None: no meter
    load_average_1m: float | None = None  # the machine's 1-minute load as the measurement started
    nominal: dict[str, Any] | None = None  # measure.nominal's record (gflops, derivation, caveats, reason, cpu)
    reused: bool = False             # a stored measurement younger than 7 days, not taken for this session
    warning: str | None = None       # why a reused one may not fit this session (its age, the load it had)
    measured_again: dict[str, Any] | None = None  # below 70% of the machine peak once: the other measurement's
    #                                               date, rates per precision and contention (or its error)

    @property
    def gflops(self) -> dict[str, float]:
        """precision -> the peak matmul GFLOP/s, for the precisions measured."""
        return {m["precision"]: m["gflops"] for m in self.matmul if m.get("gflops")}

    def rate(self, precision: str = "fp32") -> float | None:
        """The peak matmul GFLOP/s in ``precision`` (None where not measured, or the record failed)."""
        return self.gflops.get(precision)


def machine_peak(peaks: Iterable[PeakRecord], precision: str = "fp32",
                 device: str = "cpu") -> tuple[float, str] | None:
    """The machine peak: the best matmul GFLOP/s any framework's peak record (numpy's included) reached on
    ``device`` in ``precision``, and that framework; ``None`` where none measured it."""
    rates = [(r, p.framework) for p in peaks if p.device == device and (r := p.rate(precision))]
    return max(rates) if rates else None


@dataclass(frozen=True)
class PrivacyRecord(StoredRecord):
    """A DP-SGD workload's (epsilon, delta) guarantee as a session keeps it: the JSON form of
    :class:`isobench.workloads.privacy.Guarantee` (its fields, which the result model mirrors: it may not import the
    workloads) and ``counterpart``. Sessions recorded before the PLD accountant lack ``epsilon_rdp``,
    ``epsilon_pld`` and ``pld_discretization`` (their ``epsilon`` is RDP's)."""
    epsilon: float | None            # the tighter accountant's; None: no noise, so no finite epsilon
    delta: float
    noise_multiplier: float
    sampling: str                    # "poisson" or "shuffle"
    sampling_rate: float             # q: expected fraction of the training split in one step
    steps: int
    accountant: str                  # the accountant that gave epsilon, "dp-accounting PLD"
    note: str = ""                   # how the sampling was accounted, when not exactly as run
    clip: float | None = None        # the per-example L2 norm bound
    n_train: int | None = None
    accountant_version: str = ""
    orders: list[float] = field(default_factory=list)  # the Renyi orders the RDP accountant minimised over
    optimal_order: float | None = None
    epsilon_rdp: float | None = None
    epsilon_pld: float | None = None  # None also where the PLD accountant has no such event (shuffled batches)
    pld_discretization: float | None = None  # nats
    counterpart: str | None = None   # the non-private workload it is compared with in the session; None: not run


TRAINING, DEPLOYMENT, SERVING = "training", "deployment", "serving"  # the kinds of session (runner.session.KINDS)


@dataclass
class ResultSet:
    """Everything one session produced: its kind, configuration, host environment and every record."""
    config: dict[str, Any]
    environment: dict[str, Any]
    runs: list[RunRecord] = field(default_factory=list)
    isobench_version: str = ""
    created_at: str = ""
    schema_version: int = SCHEMA_VERSION
    session_id: int | None = None   # id in the results database; None when not stored
    # per workload, the parity result checked before measuring (runner.parity_summary); {} = skipped
    parity: dict[str, ParityResult] = field(default_factory=dict)
    # framework -> its measured peak (runner.peak); % of peak divides by the best of them (machine_peak); {} = not
    # measured (--no-peak, or a session older than schema 3)
    peaks: dict[str, PeakRecord] = field(default_factory=dict)
    # per DP-SGD workload, its (epsilon, delta) guarantee as the parent computed it once before any run, with the
    # non-private workload it is compared with; {} = no private workload (or a session older than schema 4)
    privacy: dict[str, PrivacyRecord] = field(default_factory=dict)
    # ``isobench deploy``: one record per export and serve worker, and per workload the trained weights served
    # (fingerprint, trained_by, cache file); both empty in a training session
    deploys: list["DeployRecord"] = field(default_factory=list)
    weights: dict[str, Any] = field(default_factory=dict)
    # ``isobench deploy --scenario``: one record per load worker (a scenario served under LoadGen); its exports are
    # in :attr:`deploys`
    loads: list["LoadRecord"] = field(default_factory=list)
    kind: str | None = None         # TRAINING, DEPLOYMENT or SERVING; None: read from what the session holds

    def __post_init__(self) -> None:
        if self.kind is None:  # stored sessions say it by their records (a deploy session's config by its command)
            self.kind = SERVING if self.loads or self.config.get("scenarios") else \
                DEPLOYMENT if self.config.get("command") == "deploy" or self.deploys else TRAINING

    @property
    def is_deploy(self) -> bool:
        """A deployment session (its records are :attr:`deploys`, not :attr:`runs`)."""
        return self.kind == DEPLOYMENT

    @property
    def is_serving(self) -> bool:
        """A serving session (its exports in :attr:`deploys`, its load records in :attr:`loads`)."""
        return self.kind == SERVING

    @property
    def records(self) -> list[Record]:
        """Every record of the session, in plan order."""
        return sorted(self.runs + self.deploys + self.loads, key=lambda r: r.order)

    def records_of(self, record: Record) -> list[Record]:
        """The list a record of this type is kept in (``runs``, ``deploys`` or ``loads``)."""
        return self.loads if isinstance(record, LoadRecord) else self.deploys if isinstance(record, DeployRecord) \
            else self.runs

    def peak_gflops(self, framework: str, precision: str = "fp32", device: str = "cpu") -> float | None:
        """``framework``'s own measured peak matmul GFLOP/s in ``precision`` on ``device`` (Keras: its backend
        framework's), ``None`` where not measured: the numerator of its matmul efficiency."""
        p = self.peaks.get(peak_framework(framework))
        return p.rate(precision) if p and p.device == device else None

    def machine_peak_gflops(self, precision: str = "fp32", device: str = "cpu") -> float | None:
        """The session's machine peak (:func:`machine_peak` over its peak records) in GFLOP/s."""
        best = machine_peak(self.peaks.values(), precision, device)
        return best and best[0]

    def peak_flops_s(self, spec: RunSpec) -> float | None:
        """The denominator of a run's % of peak, in FLOP/s: the machine peak at the run's precision and device, the
        same for every framework; ``None`` for the float64 numpy reference (no float64 peak is measured)."""
        rate = None if spec.framework == "numpy" else self.machine_peak_gflops(spec.precision, spec.device)
        return rate * 1e9 if rate else None

    def to_dict(self) -> dict[str, Any]:
        return {"schema_version": self.schema_version, "isobench_version": self.isobench_version,
                "created_at": self.created_at, "session_id": self.session_id, "config": self.config,
                "environment": self.environment, "parity": to_dicts(self.parity), "peaks": to_dicts(self.peaks),
                "privacy": to_dicts(self.privacy), "runs": [r.to_dict() for r in self.runs],
                **({"weights": self.weights, "deploys": [r.to_dict() for r in self.deploys]}
                   if self.is_deploy or self.is_serving else {}),
                **({"loads": [r.to_dict() for r in self.loads]} if self.is_serving else {})}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ResultSet":
        """The result set of a JSON document, migrated to the current schema version."""
        version = d.get("schema_version")
        if not isinstance(version, int):
            raise UserError("not an isobench result file: no schema_version")
        if version > SCHEMA_VERSION:
            raise UserError(f"result file has schema {version}, newer than this isobench ({SCHEMA_VERSION}); "
                            "upgrade isobench to read it")
        runs = [migrate_run_v1(r) for r in d.get("runs", [])] if version < 2 else d.get("runs", [])
        return cls(config=d.get("config", {}), environment=d.get("environment", {}),
                   runs=[RunRecord.from_dict(r) for r in runs],
                   isobench_version=d.get("isobench_version", ""), created_at=d.get("created_at", ""),
                   session_id=d.get("session_id"), parity=ParityResult.from_dicts(d.get("parity")),
                   peaks=PeakRecord.from_dicts(d.get("peaks")), privacy=PrivacyRecord.from_dicts(d.get("privacy")),
                   deploys=[DeployRecord.from_dict(r) for r in d.get("deploys") or []], weights=d.get("weights") or {},
                   loads=[LoadRecord.from_dict(r) for r in d.get("loads") or []])

    def write_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1, allow_nan=False) + "\n")

    @classmethod
    def read_json(cls, path: str | Path) -> "ResultSet":
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (OSError, json.JSONDecodeError) as e:
            raise UserError(f"cannot read results {path}: {e}") from None


# ---- isobench deploy: the same trained model exported and served along each deployment path

EXPORT, SERVE = "export", "serve"  # the two kinds of deploy worker


class PathSpec:
    """What a deployment worker's spec and a load worker's share: a deployment ``path`` (its framework first) and a
    ``repeat`` (negative: a warm-up)."""
    path: str
    repeat: int

    @property
    def warmup(self) -> bool:
        return self.repeat < 0

    @property
    def framework(self) -> str:
        return self.path.split("/")[0]


@dataclass(frozen=True)
class DeploySpec(PathSpec):
    """Identity of one deployment record: the export of a path at a precision (``kind`` export: no batch size,
    repeat 0), or what serving process ``repeat`` of that artifact measured at one batch size (``kind`` serve). The
    serving process itself, which serves every batch size of the session, is the spec without a batch size
    (:attr:`unit`)."""
    workload: str
    path: str                       # a key of backends.deploy.PATHS, "torch/onnx"
    quantize: str                   # "none" (fp32) or "int8"
    batch_size: int | None          # None: an export, or a serving process's every batch size (its unit)
    repeat: int
    threads: int
    kind: str = SERVE               # EXPORT or SERVE

    @classmethod
    def export(cls, workload: str, path: str, quantize: str, threads: int) -> "DeploySpec":
        return cls(workload, path, quantize, None, 0, threads, EXPORT)

    @property
    def unit(self) -> "DeploySpec":
        """What a worker process stands for: the export itself, or the serving process (every batch size)."""
        return replace(self, batch_size=None)

    @property
    def row(self) -> tuple[str, str, str, int | None]:
        """The row of the deploy table this record belongs to (every repeat of it)."""
        return self.workload, self.path, self.quantize, self.batch_size

    @property
    def label(self) -> str:
        return f"{self.path}" + (f" int8" if self.quantize == "int8" else "") + \
            (" export" if self.kind == EXPORT else f" batch {self.batch_size}" if self.batch_size else "")

    def to_dict(self) -> dict[str, Any]:
        """The JSON and database form: an export's batch size is written 0, as every stored session has it."""
        return {"workload": self.workload, "path": self.path, "quantize": self.quantize,
                "batch_size": 0 if self.kind == EXPORT else self.batch_size, "repeat": self.repeat,
                "threads": self.threads}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DeploySpec":
        export = d["batch_size"] == 0
        return cls(d["workload"], d["path"], d["quantize"], None if export else d["batch_size"], d["repeat"],
                   d["threads"], EXPORT if export else SERVE)


@dataclass
class DeployMetrics:
    """What one deploy worker measured. Seconds, bytes, samples/s, accuracy as a fraction; an export fills the
    export fields, a serving process the rest."""
    export_s: float | None = None           # export() wall time in the export worker
    artifact_bytes: int | None = None       # on disk: the file, or a directory's files summed
    details: dict[str, Any] = field(default_factory=dict)  # what the exporter did (Exported.details)
    cold_start_s: float | None = None       # parent's spawn -> first result (CLOCK_MONOTONIC, both processes)
    load_s: float | None = None             # serve(): load the artifact in the runtime
    first_call_s: float | None = None       # the first inference
    warmup_calls: int = 0
    latencies_s: list[float] = field(default_factory=list)  # every timed call (perf_counter_ns), in order
    latency_p50_s: float | None = None
    latency_p90_s: float | None = None
    latency_p99_s: float | None = None
    throughput_samples_s: float | None = None  # batch_size * calls / their summed latency
    peak_rss_bytes: int | None = None       # VmHWM of the serving process
    process_peak_rss_bytes: int | None = None  # ru_maxrss from the parent's wait4
    test_accuracy: float | None = None      # the served model over the whole test split
    test_loss: float | None = None
    max_abs_logit_diff: float | None = None  # against the float64 reference logits on the test split
    logit_tolerance: float | None = None    # None: not parity-checked (int8)

    @property
    def parity_passed(self) -> bool | None:
        if self.logit_tolerance is None or self.max_abs_logit_diff is None:
            return None
        return self.max_abs_logit_diff <= self.logit_tolerance

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DeployMetrics":
        return cls(**_known(cls, d))


@dataclass
class DeployRecord(Record):
    """An export worker's record, or one batch size of a serving worker's."""
    spec: DeploySpec
    metrics: DeployMetrics | None = None

    @property
    def ok(self) -> bool:
        """Ran, and (fp32) its logits are within tolerance of the reference."""
        return self.status == OK and (self.metrics is None or self.metrics.parity_passed is not False)

    def to_dict(self) -> dict[str, Any]:
        return {**self.spec.to_dict(), **{k: getattr(self, k) for k in (
            "status", "order", "wall_s", "exit_code", "signal", "error", "stderr_tail")},
                "environment": self.environment.to_dict(),
                **{k: v for k in ("lost", "replaces") if (v := getattr(self, k)) is not None},
                "metrics": asdict(self.metrics) if self.metrics else None}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DeployRecord":
        m = d.get("metrics")
        return cls(spec=DeploySpec.from_dict(d), metrics=DeployMetrics.from_dict(m) if m else None, **cls.common_from_dict(d))


# ---- isobench deploy --scenario: each path's exported model served under load, MLPerf LoadGen's scenarios

LOAD = "load"  # the kind of worker that serves one scenario under LoadGen
SCENARIOS = ("single-stream", "multi-stream", "offline", "server")  # MLPerf LoadGen's, as --scenario names them
MULTI_STREAM = 8  # samples per multi-stream query (MLPerf's)


@dataclass(frozen=True)
class LoadSpec(PathSpec):
    """Identity of one load worker: ``path`` at ``quantize`` serving ``scenario`` (single-stream, multi-stream,
    offline, server) with dynamic batching ``off`` or ``dynamic``, repeat ``repeat``."""
    workload: str
    path: str
    quantize: str
    scenario: str
    batching: str
    repeat: int
    threads: int
    kind: str = LOAD

    @property
    def unit(self) -> "LoadSpec":
        return self

    @property
    def row(self) -> tuple[str, str, str, str, str]:
        """The row of the serving table this worker belongs to (every repeat of it)."""
        return self.workload, self.scenario, self.path, self.quantize, self.batching

    @property
    def label(self) -> str:
        return (f"{self.path}" + (" int8" if self.quantize == "int8" else "")
                + (" batching" if self.batching != "off" else "") + f" {self.scenario}")

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "kind"}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "LoadSpec":
        return cls(**{f.name: d[f.name] for f in fields(cls) if f.name != "kind"})


@dataclass
class Trial:
    """One LoadGen run: its target (server: QPS) and what LoadGen measured and judged. Seconds and samples/s."""
    target_qps: float | None
    valid: bool
    reason: str                      # LoadGen's invalid reason, "" when valid
    early_stopping: str              # LoadGen's early-stopping result, as it says it
    samples_per_s: float | None      # completed (server) or measured (offline) samples per second
    queries: int | None
    latency_p50_s: float | None
    latency_p90_s: float | None
    latency_p99_s: float | None
    overlatency_queries: int | None = None  # server: queries over the latency bound

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Trial":
        return cls(**_known(cls, d))


@dataclass
class LoadMetrics:
    """What one load worker measured in its scenario. Seconds, samples/s, bytes, accuracy as a fraction."""
    trials: list[Trial] = field(default_factory=list)  # every LoadGen run, in order (server: the search)
    max_qps: float | None = None            # server: the largest target QPS LoadGen judged VALID under the bound
    samples_per_s: float | None = None      # offline: samples/s; server: completed samples/s at max_qps
    latency_p50_s: float | None = None      # at max_qps (server) or of the run (other scenarios)
    latency_p90_s: float | None = None
    latency_p99_s: float | None = None
    valid: bool | None = None               # LoadGen's verdict on the reported run
    reason: str = ""                        # why it is INVALID ("" when VALID)
    early_stopping: str = ""                # LoadGen's early-stopping result of the reported run
    answers: int = 0                        # every answer given under load, all checked
    wrong_answers: int = 0                  # beyond the logit tolerance (fp32)
    max_abs_logit_diff: float | None = None  # over every answer, against the float64 reference
    logit_tolerance: float | None = None    # None: not parity-checked (int8)
    accuracy: float | None = None           # of every answer given under load
    load_s: float | None = None             # loading every model instance (all batch sizes and threads)
    peak_rss_bytes: int | None = None       # VmHWM of the load worker
    process_peak_rss_bytes: int | None = None  # ru_maxrss from the parent's wait4
    settings: dict[str, Any] = field(default_factory=dict)  # the LoadGen settings and the server's, as used

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "LoadMetrics":
        known = _known(cls, d)
        known["trials"] = [Trial.from_dict(t) for t in known.get("trials") or []]
        return cls(**known)


@dataclass
class LoadRecord(Record):
    """One load worker's record: a scenario served under LoadGen by one fresh process."""
    spec: LoadSpec
    metrics: LoadMetrics | None = None

    def to_dict(self) -> dict[str, Any]:
        return {**self.spec.to_dict(), **{k: getattr(self, k) for k in (
            "status", "order", "wall_s", "exit_code", "signal", "error", "stderr_tail", "lost", "replaces")},
                "environment": self.environment.to_dict(), "metrics": asdict(self.metrics) if self.metrics else None}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "LoadRecord":
        m = d.get("metrics")
        return cls(spec=LoadSpec.from_dict(d), metrics=LoadMetrics.from_dict(m) if m else None, **cls.common_from_dict(d))
