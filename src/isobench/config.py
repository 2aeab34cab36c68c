"""The configuration of every command that runs workers: every default stated once, and one path from the user's
choices to a typed, validated configuration per command: :class:`RunChoices` -> :func:`resolve_run` ->
:class:`RunConfig` (stored with a training session's results), :class:`DeployChoices` -> :func:`resolve_deploy` ->
:class:`DeployConfig`, :class:`ParityChoices` -> :func:`resolve_parity` -> :class:`ParityConfig` and
:class:`PeakChoices` -> :func:`resolve_peak` -> :class:`PeakConfig`. A choice is what the user typed (names,
comma-separated lists, folders, devices; ``None``: the default); every problem is a one-line
:class:`~isobench.errors.UserError` naming the flag, raised before any worker starts. Cells that cannot build a
workload are refused here, from the check the worker's build makes (:func:`refusals`)."""
from __future__ import annotations

import os
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from .backends import DEFAULT_FRAMEWORKS, get_backend, installed_frameworks, is_installed
from .backends.base import GPU_PRECISIONS, OPTIMIZER_IMPLS, PRECISIONS, check_build
from .backends.peak import FRAMEWORKS as PEAK_FRAMEWORKS
from .data import load_dataset, scaled
from .errors import UserError
from .measure import default_threads
from .results import MULTI_STREAM, SCENARIOS, Cell
from .workloads import SCALABLE, Workload, counterpart, get_workload

# the defaults of `isobench run` and of the Python API alike
WORKLOAD = "seed-mlp"
REPEATS = 5
# warm-up workers per cell before the measured ones (docs/measurement.md, "Warm-up workers and outliers"): none
# after the parity check, whose workers have already loaded every framework's files; one without it, to take the
# cold start (measured after dropping the page cache: the first TensorFlow worker imported 1.2 s slower)
WARMUP, WARMUP_WITHOUT_PARITY = 0, 1
TIMEOUT_S = 600.0     # a worker running longer is killed and recorded 'timeout'
SEED = 0              # orders the plan; the workload's own seed fixes weights and data
SEEDS = 1             # training seeds per cell (repeat r: workload seed + r mod SEEDS)
PRECISION = "fp32"
# the optimizer implementation: the framework's own library, as a user's script calls it (docs/measurement.md,
# "Optimizer implementations"); a backend without one (numpy, the reference) runs its own rules ("neutral")
OPTIMIZER = OPTIMIZER_IMPLS[0]
DEVICE = "cpu"
DEVICE_CHOICES = ("cpu", "cuda", "auto")
EXECUTOR = "local"
TARGET_WIDTH = 0.05   # --until-confident: every interval within +/- 5% of its ratio
MAX_REPEATS = 20      # --until-confident: stop here even if not confident
NVIDIA_PROC = Path("/proc/driver/nvidia/gpus")
# the compute-bound workloads (resnet18, gpt2-small, bert-base): --scale s in (0, 1] shrinks model, input and data
# (workloads/zoo.py); their parity check runs at this scale unless a smaller one is asked for, since the float64
# numpy reference of a full-scale model takes hours per step on a CPU (docs/workloads.md)
COMPUTE_PARITY_SCALE = 0.0625
# a reused stored peak is flagged (runner.peak.peak_warning) when older than this, or when measured under a 1-minute
# load average more than PEAK_LOAD_MARGIN above the present one: a busy machine lowers the peak, inflating % of peak
PEAK_WARN_AGE_S = 86400.0
PEAK_LOAD_MARGIN = 1.0


@dataclass
class RunConfig:
    """The resolved configuration of one session; stored with its results. ``threads`` defaults to every CPU
    this process may use, as on the command line."""
    workloads: list[str]
    frameworks: list[str]
    repeats: int = REPEATS
    warmup: int = WARMUP         # fresh warm-up workers per cell, run first and never counted
    threads: int = field(default_factory=default_threads)
    timeout_s: float | None = TIMEOUT_S
    seed: int = SEED
    # --seeds: repeat r trains from seed workload.seed + r mod seeds (weights, epoch orders, dropout), the same
    # seed for every framework; 1 = every repeat the identical training
    seeds: int = SEEDS
    # framework -> its modes, in order; a framework not listed runs its default (the backend's first) mode
    modes: dict[str, list[str]] = field(default_factory=dict)
    # adaptive repeats (runner.adaptive): after `repeats`, add blocks until every ratio's 95% interval is within
    # +/- target_width (a fraction of the ratio) or max_repeats is reached; None = exactly `repeats`
    target_width: float | None = None
    max_repeats: int | None = None
    data_dir: str | None = None  # real data sets (MNIST, CIFAR-10) for workloads that have one
    scale: float | None = None   # multiply synthetic data set sizes; shrink a compute-bound workload (0 < s <= 1)
    precisions: list[str] = field(default_factory=lambda: [PRECISION])
    # optimizer implementations (backends.base.OPTIMIZER_IMPLS); a framework with none of them runs its first
    optimizers: list[str] = field(default_factory=lambda: [OPTIMIZER])
    device: str = DEVICE         # "cpu" or "cuda" (resolved: never "auto")
    gpus: list[int] = field(default_factory=list)  # cuda: one parallel worker slot per GPU index
    max_memory_bytes: int | None = None  # kill a worker whose RSS exceeds this (status out_of_memory)
    executor: str = EXECUTOR     # a name of runner.executor.EXECUTORS
    ray_address: str | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunConfig":
        """A stored configuration (any isobench version's) back as a config, e.g. to resume its session."""
        names = {f.name for f in fields(cls)}
        out = cls(**{"warmup": 0, **{k: v for k, v in d.items() if k in names}})  # stored before --warmup: none
        out.modes = {f: [m] if isinstance(m, str) else list(m) for f, m in (out.modes or {}).items()}
        if "optimizers" not in d:  # stored before the axis existed: it ran isobench's own update rules
            out.optimizers = ["neutral"]
        return out

    kind = "training"  # the kind of session it configures (runner.session.KINDS)

    @property
    def adaptive(self) -> bool:
        return self.target_width is not None

    def modes_of(self, framework: str) -> list[str]:
        return list(self.modes.get(framework) or [get_backend(framework).modes[0]])

    def optimizers_of(self, framework: str) -> list[str]:
        """The chosen optimizer implementations ``framework`` has, or (none) its first: the reference's own rules."""
        impls = get_backend(framework).optimizer_impls
        return [o for o in self.optimizers if o in impls] or [impls[0]]

    def cells(self) -> list[Cell]:
        """Every measured cell, in column order; precisions a backend lacks are left out (see :meth:`skipped`)."""
        return [Cell(f, m, p, o) for f in self.frameworks for m in self.modes_of(f) for p in self.precisions
                if p in get_backend(f).precisions for o in self.optimizers_of(f)]

    def skipped(self) -> list[str]:
        """Notes on (framework, precision) pairs left out because the backend does not implement them."""
        return [f"{get_backend(f).display} has no {p} precision; left out" for f in self.frameworks
                for p in self.precisions if p not in get_backend(f).precisions]

    def refused(self) -> dict[tuple[str, Cell], str]:
        """(workload name, cell) -> why that cell cannot train that workload (:func:`refusals`): the pairs the plan
        leaves out (:func:`~isobench.runner.plan.make_plan`'s ``refused``)."""
        return refusals(resolve_workloads(self), self.cells(), self.device)

    def check(self) -> list[str]:
        """Validate the combination of choices (threads, seeds, repeats, cells, workload files and data sets, the
        cells that cannot build a workload: :func:`refusals`) before any worker starts; returns the notes to show."""
        check_threads(self.threads)
        notes = self.skipped()
        if self.seeds > self.repeats:
            raise UserError(f"--seeds {self.seeds} needs --repeats {self.seeds} or more (repeat r trains from seed "
                            f"s + r mod {self.seeds}), so that every seed is measured")
        if extra := self.repeats % self.seeds:
            notes.append(f"--repeats {self.repeats} is not a multiple of --seeds {self.seeds}: "
                         + ("seed s gets" if extra == 1 else f"seeds s to s + {extra - 1} get")
                         + " one repeat more than the others")
        if not self.cells():
            raise UserError("no framework implements the chosen precision(s); see 'isobench list'")
        resolved = resolve_workloads(self)
        for w in resolved.values():  # every workload file and data set validated before any worker starts and
            load_dataset(w, self.data_dir)  # before the session is recorded
        if self.max_repeats is not None and self.max_repeats < self.repeats:
            raise UserError(f"--max-repeats {self.max_repeats} is below --repeats {self.repeats}")
        return notes + refusal_notes(resolved, self.cells(), refusals(resolved, self.cells(), self.device))

    def resumed(self, session_id: int, executor: str, ray_address: str | None, timeout_s: float | None,
                max_memory_bytes: int | None) -> "RunConfig":
        """This stored configuration run again by ``--resume`` on ``executor``, with a new timeout or memory cap
        where given (they do not change the plan)."""
        if self.adaptive:
            raise UserError(f"session {session_id} used --until-confident, whose plan depends on its results; "
                            "it cannot be resumed: run it again")
        return replace(self, executor=executor, ray_address=ray_address, timeout_s=timeout_s or self.timeout_s,
                       max_memory_bytes=max_memory_bytes or self.max_memory_bytes)


@dataclass
class RunChoices:
    """What the user asked ``isobench run`` for, before validation; ``None`` means the default."""
    workloads: list[str] = field(default_factory=list)
    frameworks: str | None = None   # comma-separated
    modes: str | None = None        # see resolve_modes
    precision: str | None = None    # comma-separated or "all"
    optimizer: str | None = None    # optimizer implementations: comma-separated or "all"
    device: str = DEVICE
    gpus: str | None = None         # comma-separated GPU indices
    repeats: int | None = None
    warmup: int | None = None
    threads: int | None = None
    timeout: float | None = None
    seed: int | None = None
    seeds: int | None = None
    data_dir: str | None = None
    scale: float | None = None
    max_memory: int | None = None   # bytes
    executor: str = EXECUTOR
    ray_address: str | None = None
    until_confident: bool = False
    target_width: float | None = None
    max_repeats: int | None = None
    no_counterpart: bool = False    # a private built-in runs without its non-private counterpart
    no_parity: bool = False         # no parity check first: the warm-up default is then one worker per cell


def resolve_run(c: RunChoices) -> tuple[RunConfig, list[str]]:
    """The validated :class:`RunConfig` of the choices and the notes to show (left-out frameworks, modes...)."""
    frameworks, notes = resolve_frameworks(c.frameworks)
    if not c.until_confident and (c.target_width is not None or c.max_repeats is not None):
        raise UserError("--target-width and --max-repeats apply only with --until-confident")
    workloads, counterpart_notes = (c.workloads or [WORKLOAD], []) if c.no_counterpart else \
        with_counterparts(c.workloads or [WORKLOAD])
    modes, mode_notes = resolve_modes(c.modes, frameworks, any(get_workload(w).optimizer.private for w in workloads))
    optimizers, optimizer_notes = resolve_optimizers(c.optimizer, frameworks)
    device, gpus = resolve_placement(c.executor, c.device, c.gpus, c.ray_address)
    config = RunConfig(workloads=workloads, frameworks=frameworks,
                       repeats=REPEATS if c.repeats is None else c.repeats,
                       warmup=(WARMUP_WITHOUT_PARITY if c.no_parity else WARMUP) if c.warmup is None else c.warmup,
                       threads=resolve_threads(c.threads),
                       timeout_s=c.timeout or TIMEOUT_S, seed=c.seed or SEED, seeds=c.seeds or SEEDS,
                       data_dir=resolve_data_dir(c.data_dir), scale=c.scale, modes=modes,
                       precisions=resolve_precisions(c.precision), optimizers=optimizers, device=device, gpus=gpus,
                       max_memory_bytes=c.max_memory, executor=c.executor, ray_address=c.ray_address)
    check_precision_device(config.precisions, config.device)
    if c.until_confident:
        config.target_width, config.max_repeats = c.target_width or TARGET_WIDTH, c.max_repeats or MAX_REPEATS
    return config, notes + mode_notes + optimizer_notes + counterpart_notes + config.check()


def with_counterparts(entries: list[str]) -> tuple[list[str], list[str]]:
    """``entries`` (workload names or TOML paths) with the non-private counterpart of every private built-in added
    after them unless already there (:data:`~isobench.workloads.zoo.COUNTERPARTS`: the cost of privacy is measured
    in the same session), and a note per added one."""
    names = {get_workload(e).name for e in entries}
    out, notes = list(entries), []
    for e in entries:
        if (c := counterpart(e)) and c not in names:
            names.add(c)
            out.append(c)
            notes.append(f"{e} runs with its non-private counterpart {c} in the same session, interleaved, for the "
                         "cost of privacy (--no-counterpart: without it)")
    return out, notes


def resolve_frameworks(text: str | None) -> tuple[list[str], list[str]]:
    """Framework ids from a comma-separated list (validated), or the installed defaults.

    Returns ``(frameworks, notes)``; notes name default frameworks that are missing and how to add them."""
    if text:
        names = [get_backend(n.strip()).name for n in text.split(",") if n.strip()]
        if not names:
            raise UserError("--frameworks is empty; give a comma-separated list such as torch,tensorflow,jax")
        return list(dict.fromkeys(names)), []
    names = installed_frameworks()
    notes = [f"{get_backend(n).display} is not installed and is left out; add it with: {get_backend(n).install_hint}"
             for n in DEFAULT_FRAMEWORKS if n not in names]
    if not names:
        raise UserError("no framework is installed; install them with: pip install -c constraints.txt '.[all]'")
    return names, notes


def resolve_modes(text: str | None, frameworks: list[str],
                  private: bool = False) -> tuple[dict[str, list[str]], list[str]]:
    """``--modes`` -> (framework -> its modes, notes). ``all``: every mode of every framework (its private modes
    too where ``private``: some workload is dp-sgd); ``default`` (or nothing): each framework's default; else a
    comma-separated list of MODE (every chosen framework that has it) or FRAMEWORK=MODE items. A framework that
    none of the items names runs its default mode (noted). A private mode runs only dp-sgd workloads
    (:func:`runs_mode`)."""
    if not text or text.strip() == "default":
        return {}, []
    backends = {f: get_backend(f) for f in frameworks}
    if text.strip() == "all":
        return {f: _all_modes(b) if private else list(b.modes) for f, b in backends.items()}, []
    chosen: dict[str, list[str]] = {}
    for item in filter(None, (x.strip() for x in text.split(","))):
        mode, targets = _mode_item(item, backends, frameworks)
        for fw in targets:
            if mode not in chosen.setdefault(fw, []):
                chosen[fw].append(mode)
    if not private and (only := sorted({m for f, ms in chosen.items() for m in ms if m in backends[f].private_modes})):
        raise UserError(f"--modes {', '.join(only)}: only dp-sgd workloads have it (e.g. dp-mlp); none is chosen")
    notes = [f"--modes names no mode of {backends[f].display}; it runs its default mode {backends[f].modes[0]}"
             for f in frameworks if f not in chosen]
    return chosen, notes


def refusals(workloads: dict[str, Workload], cells: Iterable[Cell], device: str) -> dict[tuple[str, Cell], str]:
    """(workload key, cell) -> why the cell cannot build that workload: the message of
    :func:`~isobench.backends.base.check_build`, the check the worker's build makes, which is pure (it imports no
    framework), so that doomed work (dp-sgd in bf16, a Keras cell of a private workload) is refused when the
    session is planned instead of failing in a worker. A backend's private mode on a non-private workload is among
    them (:func:`runs_mode`)."""
    out = {}
    for key, w in workloads.items():
        for c in cells:
            try:
                check_build(get_backend(c.framework), w, c.mode, c.precision, device, c.optimizer)
            except (ValueError, NotImplementedError) as e:
                out[key, c] = str(e)
    return out


def refusal_notes(workloads: dict[str, Workload], cells: list[Cell], refused: dict[tuple[str, Cell], str],
                  required: bool = True) -> list[str]:
    """Notes on the ``refused`` cells of each workload, left out (a private mode on a non-private workload
    silently: it never applies); a one-line :class:`UserError` naming the workload, its cells and the reasons when
    none of its cells can run, unless not ``required`` (a workload the user did not name: a note)."""
    notes = []
    for key, w in workloads.items():
        applies = [c for c in cells if runs_mode(c.framework, c.mode, w.optimizer.private)]
        why: dict[str, list[str]] = {}
        for c in applies:
            if (key, c) in refused:
                why.setdefault(refused[key, c], []).append(str(c))
        text = "; ".join(f"{', '.join(names)}: {reason}" for reason, names in why.items())
        if applies and sum(map(len, why.values())) == len(applies):
            if required:
                raise UserError(f"{key} cannot run in any chosen cell: {text}")
            notes.append(f"{key} is left out, no chosen cell can run it: {text}")
        elif why:
            notes.append(f"{key}: left out {text}")
    return notes


def runs_mode(framework: str, mode: str, private: bool) -> bool:
    """Whether a workload (``private``: dp-sgd) runs in ``mode``: a backend's private modes run only dp-sgd."""
    return private or mode not in get_backend(framework).private_modes


def _all_modes(backend) -> list[str]:
    return [*backend.modes, *backend.private_modes]


def _mode_item(item: str, backends: dict, frameworks: list[str]) -> tuple[str, list[str]]:
    """One ``--modes`` item -> (mode, the frameworks it applies to)."""
    if "=" not in item:
        targets = [f for f, b in backends.items() if item in _all_modes(b)]
        if not targets:
            known = sorted({m for b in backends.values() for m in _all_modes(b)})
            raise UserError(f"--modes: no compared framework has a mode {item!r}; modes: {', '.join(known)}, all")
        return item, targets
    fw, mode = (x.strip() for x in item.split("=", 1))
    fw = get_backend(fw).name
    if fw not in backends:
        raise UserError(f"--modes {item}: {fw} is not among the compared frameworks ({', '.join(frameworks)})")
    if mode not in _all_modes(backends[fw]):
        raise UserError(f"--modes {item}: {backends[fw].display} has no mode {mode!r}; "
                        f"it has: {', '.join(_all_modes(backends[fw]))}")
    return mode, [fw]


def resolve_optimizers(text: str | None, frameworks: list[str]) -> tuple[list[str], list[str]]:
    """``--optimizer library,neutral`` (or ``all``; default :data:`OPTIMIZER`) -> (validated list, notes on
    frameworks that have none of them and run their own rules instead); a one-line error where no chosen framework
    has any."""
    if not text:
        return [OPTIMIZER], []
    names = list(OPTIMIZER_IMPLS) if text.strip() == "all" else \
        list(dict.fromkeys(x.strip().lower() for x in text.split(",") if x.strip()))
    for n in names:
        if n not in OPTIMIZER_IMPLS:
            raise UserError(f"--optimizer: unknown implementation {n!r}; choose from: "
                            f"{', '.join(OPTIMIZER_IMPLS)}, all")
    if not names:
        raise UserError("--optimizer is empty; give library, neutral, a comma-separated list or all")
    backends = [get_backend(f) for f in frameworks]
    lacking = [b for b in backends if not set(names) & set(b.optimizer_impls)]
    if len(lacking) == len(backends):
        raise UserError(f"--optimizer {','.join(names)}: none of the chosen frameworks has it (they have: "
                        + "; ".join(f"{b.display} {', '.join(b.optimizer_impls)}" for b in lacking) + ")")
    return names, [f"{b.display} has no {' or '.join(names)} optimizer implementation; it runs "
                   f"{b.optimizer_impls[0]}" for b in lacking]


def check_precision_device(precisions: list[str], device: str) -> None:
    """tf32 exists on a GPU only: on the CPU a float32 matmul is fp32, and a 'tf32' cell would repeat fp32."""
    gpu_only = [p for p in precisions if p in GPU_PRECISIONS]
    if gpu_only and device != "cuda":
        raise UserError(f"--precision {gpu_only[0]} needs --device cuda: a CPU has no TF32, its float32 matmuls "
                        "are fp32")


def resolve_precisions(text: str | None) -> list[str]:
    """``--precision fp32,bf16`` (or ``all``: fp32, bf16, fp16; tf32 is named explicitly) -> validated list."""
    if not text:
        return [PRECISION]
    if text.strip() == "all":
        return list(PRECISIONS)
    names = list(dict.fromkeys(x.strip().lower() for x in text.split(",") if x.strip()))
    for n in names:
        if n not in PRECISIONS + GPU_PRECISIONS:
            raise UserError(f"unknown precision {n!r}; choose from: {', '.join(PRECISIONS + GPU_PRECISIONS)}, all")
    if not names:
        raise UserError("--precision is empty; give fp32, bf16, fp16 or a comma-separated list")
    return names


def resolve_data_dir(value: str | None) -> str | None:
    if value and not Path(value).is_dir():
        raise UserError(f"--data-dir {value} is not a folder")
    return value


def resolve_threads(value: int | None) -> int:
    """``--threads``, at most the CPUs this process may use (the default: all of them)."""
    threads = default_threads() if value is None else value
    check_threads(threads)
    return threads


def check_threads(threads: int) -> None:
    """1 <= ``threads`` <= the CPUs this process may use: a worker pins that many (a stored configuration resumed
    on a smaller machine, or one written in Python, is checked as the flag is)."""
    if threads < 1:
        raise UserError(f"--threads {threads}: give at least 1")
    if threads > (available := default_threads()):
        raise UserError(f"--threads {threads} exceeds the {available} CPUs this process may use")


def resolve_workload(name: str, data_dir: str | None = None, scale: float | None = None) -> Workload:
    """A workload by name or TOML path, switched to its real data set when ``data_dir`` is given (e.g.
    lenet5 -> MNIST) and with ``scale`` times as many synthetic examples; a compute-bound workload
    (:data:`~isobench.workloads.SCALABLE`) is instead built at ``scale``, model and data shrunk together."""
    if name in SCALABLE and scale is not None:
        if not 0 < scale <= 1:
            raise UserError(f"--scale for {name} shrinks it: give 0 < F <= 1, not {scale:g}")
        return SCALABLE[name](scale)
    workload = get_workload(name)
    if data_dir and workload.data.dir_source:
        workload = replace(workload, data=replace(workload.data, source=workload.data.dir_source))
    return scaled(workload, scale) if scale and scale != 1 else workload


def parity_scale(name: str, scale: float | None) -> float | None:
    """The scale a session's parity check of workload ``name`` runs at: a compute-bound workload at
    :data:`COMPUTE_PARITY_SCALE` or the smaller scale measured; any other workload at full size (``None``), as
    parity ignores a data-size ``--scale``."""
    if name not in SCALABLE:
        return None
    return min(scale or 1.0, COMPUTE_PARITY_SCALE)


def resolve_workloads(config: RunConfig) -> dict[str, Workload]:
    """The config's workloads (names or TOML paths) by workload name, with data_dir and scale applied."""
    out: dict[str, Workload] = {}
    for entry in config.workloads:
        w = resolve_workload(entry, config.data_dir, config.scale)
        if w.name in out:
            raise UserError(f"two workloads are named {w.name!r}; give each TOML workload a unique name")
        out[w.name] = w
    return out


# ---- devices: which device the workers use and which GPUs they may have ---------------------------------------

def resolve_placement(executor: str, device: str, gpus: str | None,
                      ray_address: str | None) -> tuple[str, list[int]]:
    """``(device, gpu slots)`` of ``--executor``, ``--device`` and ``--gpus``. A cluster's nodes have the GPUs,
    not necessarily this machine: with the Ray executor Ray places every cuda cell on a GPU it chooses."""
    if executor == "ray":
        if gpus:
            raise UserError("--gpus applies to the local executor; with --executor ray each cuda cell takes one "
                            "GPU that Ray chooses")
        if device == "auto":
            raise UserError("--device auto cannot see a cluster's GPUs; give --device cpu or cuda with --executor ray")
        return device, []
    if ray_address:
        raise UserError("--ray-address applies only with --executor ray")
    return resolve_device(device, parse_gpus(gpus) if gpus else None)


def detect_gpus() -> list[int]:
    """Indices of the NVIDIA GPUs this machine has (as ``nvidia-smi`` numbers them), found without importing a
    framework: ``nvidia-smi``, else the driver's ``/proc`` entries; ``[]`` when none."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=20, stdin=subprocess.DEVNULL)
        if out.returncode == 0:
            return [int(line) for line in out.stdout.split() if line.strip().isdigit()]
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        return list(range(len(list(NVIDIA_PROC.iterdir()))))
    except OSError:
        return []


def resolve_device(device: str, gpus: list[int] | None, available: list[int] | None = None) -> tuple[str, list[int]]:
    """``(device, gpu slots)`` for ``--device`` and ``--gpus``: ``auto`` is ``cuda`` when a GPU exists; on the
    CPU the slot list is ``[]``; on ``cuda`` it is ``--gpus`` (checked against the machine) or the first GPU."""
    if device not in DEVICE_CHOICES:
        raise UserError(f"unknown device {device!r}; choose from: {', '.join(DEVICE_CHOICES)}")
    if gpus and device == "cpu":
        raise UserError("--gpus needs --device cuda (or auto)")
    found = detect_gpus() if available is None else available
    if device == "auto":
        device = "cuda" if found else "cpu"
    if device == "cpu":
        return "cpu", []
    if not found:
        raise UserError("--device cuda: no NVIDIA GPU found (nvidia-smi lists none); use --device cpu")
    if gpus:
        unknown = [g for g in gpus if g not in found]
        if unknown:
            raise UserError(f"--gpus: no GPU {unknown[0]} on this machine; it has {', '.join(map(str, found))}")
        if len(set(gpus)) != len(gpus):
            raise UserError("--gpus lists a GPU twice; each parallel worker needs its own")
        return "cuda", list(gpus)
    return "cuda", [found[0]]


def parse_gpus(text: str) -> list[int]:
    """``--gpus 0,1`` -> ``[0, 1]``; a one-line error otherwise."""
    try:
        gpus = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UserError(f"--gpus expects GPU indices such as 0,1, got {text!r}") from None
    if not gpus or any(g < 0 for g in gpus):
        raise UserError(f"--gpus expects GPU indices such as 0,1, got {text!r}")
    return gpus


# ---- isobench deploy: the defaults, stated once (docs/measurement.md, "Deployment")
DEPLOY_FRAMEWORKS = DEFAULT_FRAMEWORKS  # every deployment path of each (backends.deploy.PATHS)
DEPLOY_BATCH_SIZES = (1, 32)   # single-stream latency at 1; throughput (offline) at the larger ones
DEPLOY_QUANTIZE = ("none", "int8")
DEPLOY_REPEATS = 4             # serving processes per row: 4 is the fewest for which the verdict rule can claim
DEPLOY_CALLS = 200             # timed calls per serving process (at least 200 for p99)
DEPLOY_WARMUP = 20             # untimed calls before them (after the first, which cold start counts)
DEPLOY_CALIBRATION = 256       # training examples drawn (seeded) to calibrate int8
# isobench deploy --scenario: serving under load (docs/measurement.md, "Serving under load")
LATENCY_BOUND_S = 0.010        # server: the p99 a QPS must meet (MLPerf bounds its small models' servers at 10-15 ms)
LOAD_DURATION_S = 0.5          # each LoadGen run's minimum duration (a submission's is 600 s)
LOAD_QUANTIZE = ("none",)      # under load fp32 by default (--quantize none,int8 adds int8: twice the workers)
LOAD_MIN_QUERIES = 1024        # ... and minimum query count: enough for LoadGen's early-stopping p99 (662 at least)
CONCURRENCY = 1                # the server's executing threads
MAX_BATCH = 32                 # dynamic batching's largest batch, and the offline scenario's batch
MAX_QUEUE_DELAY_S = 0.001      # dynamic batching: the longest a sample waits for others to batch with
BATCHING = ("off",)            # dynamic batching off by default; --batching off,dynamic measures both
TRAINED_BY = "numpy"           # the backend that trains the served weights: the float64 reference, neutral
CACHE_ENV = "ISOBENCH_CACHE"   # where trained weights are kept between sessions (default ~/.cache/isobench)


def cache_dir() -> Path:
    """``$ISOBENCH_CACHE``, else ``$XDG_CACHE_HOME/isobench``, else ``~/.cache/isobench``."""
    if explicit := os.environ.get(CACHE_ENV):
        return Path(explicit)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "isobench"


@dataclass
class DeployConfig:
    """The resolved configuration of one ``isobench deploy`` session; stored with its results (``command``
    marks the session as a deploy session)."""
    workloads: list[str]
    paths: list[str]                                   # keys of backends.deploy.PATHS, in table order
    batch_sizes: list[int] = field(default_factory=lambda: list(DEPLOY_BATCH_SIZES))
    quantize: list[str] = field(default_factory=lambda: list(DEPLOY_QUANTIZE))
    repeats: int = DEPLOY_REPEATS
    calls: int = DEPLOY_CALLS
    warmup: int = DEPLOY_WARMUP
    threads: int = field(default_factory=default_threads)
    timeout_s: float | None = TIMEOUT_S
    seed: int = SEED
    trained_by: str = TRAINED_BY
    data_dir: str | None = None
    scale: float | None = None
    command: str = "deploy"
    max_memory_bytes: int | None = None  # kill a worker whose RSS exceeds this (status out_of_memory)
    executor: str = EXECUTOR     # a name of runner.executor.EXECUTORS
    ray_address: str | None = None
    keep_artifacts: str | None = None  # where exported artifacts are kept; None: beside the results database
    device: str = DEVICE         # cpu, or cuda: the paths whose DeployPath.devices include it (native ones)
    gpus: list[int] = field(default_factory=list)  # cuda: one parallel worker slot per GPU index
    # --scenario: serving under load (a serving session); [] = the single-call measurement (a deployment session)
    scenarios: list[str] = field(default_factory=list)
    latency_bound_s: float = LATENCY_BOUND_S
    duration_s: float = LOAD_DURATION_S
    min_queries: int = LOAD_MIN_QUERIES
    concurrency: int = CONCURRENCY
    batching: list[str] = field(default_factory=lambda: list(BATCHING))
    max_batch: int = MAX_BATCH
    max_queue_delay_s: float = MAX_QUEUE_DELAY_S
    qps: list[float] = field(default_factory=list)  # server at these target rates instead of the search

    @property
    def frameworks(self) -> list[str]:
        return list(dict.fromkeys(p.split("/")[0] for p in self.paths))

    adaptive = False  # serving repeats are fixed (adaptive repeats: training's --until-confident)

    @property
    def kind(self) -> str:
        """The kind of session it configures (runner.session.KINDS): serving under load with scenarios."""
        return "serving" if self.scenarios else "deployment"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DeployConfig":
        """A stored configuration (any isobench version's) back as a config, e.g. to resume its session."""
        return cls(**{k: v for k, v in d.items() if k in {f.name for f in fields(cls)}})

    def check(self) -> list[str]:
        """Threads, every workload file and data set validated before any worker starts; returns the notes to
        show."""
        check_threads(self.threads)
        for name in self.workloads:
            load_dataset(resolve_workload(name, self.data_dir, self.scale), self.data_dir)
        return []

    def resumed(self, session_id: int, executor: str, ray_address: str | None, timeout_s: float | None,
                max_memory_bytes: int | None) -> "DeployConfig":
        """This stored configuration run again by ``--resume`` on ``executor``, with a new timeout or memory cap
        where given (they do not change the plan)."""
        return replace(self, executor=executor, ray_address=ray_address, timeout_s=timeout_s or self.timeout_s,
                       max_memory_bytes=max_memory_bytes or self.max_memory_bytes)


def _int_list(text: str, flag: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"{flag} takes whole numbers separated by commas, e.g. 1,32; got {text!r}") from None
    if not values or min(values) < 1:
        raise UserError(f"{flag} needs batch sizes of at least 1, e.g. 1,32; got {text!r}")
    return sorted(set(values))


@dataclass
class DeployChoices:
    """What the user asked ``isobench deploy`` for, before validation; ``None`` means the default."""
    workloads: list[str] = field(default_factory=list)
    frameworks: str | None = None   # comma-separated
    paths: str | None = None        # comma-separated path ids, names or runtimes
    batch_sizes: str | None = None  # comma-separated
    quantize: str | None = None     # comma-separated
    repeats: int | None = None
    calls: int | None = None
    threads: int | None = None
    timeout: float | None = None
    trained_by: str | None = None
    data_dir: str | None = None
    seed: int | None = None
    max_memory: int | None = None   # bytes
    executor: str = EXECUTOR
    ray_address: str | None = None
    keep_artifacts: str | None = None
    device: str = DEVICE
    gpus: str | None = None         # comma-separated GPU indices
    scenario: str | None = None     # comma-separated scenarios or "all"
    latency_bound: float | None = None  # seconds
    duration: float | None = None   # seconds
    concurrency: int | None = None
    batching: str | None = None     # comma-separated off, dynamic
    max_batch: int | None = None
    max_queue_delay: float | None = None  # seconds
    qps: str | None = None          # comma-separated target rates


def resolve_deploy(c: DeployChoices) -> tuple[DeployConfig, list[str]]:
    """The validated :class:`DeployConfig` of ``isobench deploy``'s flags and the notes to show. ``paths``:
    comma-separated path ids (``torch/onnx``), path names (``onnx``: every chosen framework's) or runtimes
    (``onnxruntime``)."""
    from .backends.deploy import PATHS, QUANTIZATIONS, RUNTIMES

    workloads, frameworks, paths, quantize, trained_by = c.workloads, c.frameworks, c.paths, c.quantize, c.trained_by
    device, gpus = resolve_placement(c.executor, c.device, c.gpus, c.ray_address)
    chosen = [get_backend(n.strip()).name for n in frameworks.split(",") if n.strip()] if frameworks \
        else list(DEPLOY_FRAMEWORKS)
    candidates = [p for p in PATHS.values() if p.framework in chosen]
    if paths:
        items = [t.strip() for t in paths.split(",") if t.strip()]
        unknown = [t for t in items if t not in PATHS and t not in RUNTIMES and not any(p.name == t for p in PATHS.values())]
        if unknown:
            raise UserError(f"--paths: unknown {', '.join(unknown)}; choose path ids, names or runtimes from "
                            "'isobench list' (e.g. torch/onnx, onnx, litert)")
        candidates = [p for p in (candidates if not any(t in PATHS for t in items) else PATHS.values())
                      if p.id in items or p.name in items or p.runtime in items]
    if not candidates:
        raise UserError(f"no deployment path for {', '.join(chosen)}"
                        + (f" matches --paths {paths}" if paths else "") + "; see 'isobench list'")
    candidates, notes = paths_on_device(candidates, device, chosen_paths=bool(paths))
    default_quantize = LOAD_QUANTIZE if c.scenario else DEPLOY_QUANTIZE
    q = [t.strip() for t in (quantize or ",".join(default_quantize)).split(",") if t.strip()]
    if bad := [t for t in q if t not in QUANTIZATIONS]:
        raise UserError(f"--quantize: unknown {', '.join(bad)}; choose from {', '.join(QUANTIZATIONS)}")
    if trained_by and trained_by not in ("numpy", *DEFAULT_FRAMEWORKS):
        raise UserError(f"--trained-by {trained_by!r}: choose numpy (the float64 reference) or one of "
                        f"{', '.join(DEFAULT_FRAMEWORKS)}")
    load = resolve_load(c)
    batch_sizes = _int_list(c.batch_sizes, "--batch-sizes") if c.batch_sizes else list(DEPLOY_BATCH_SIZES)
    if load.get("scenarios"):  # the artifacts must serve every batch size a scenario uses (static-batch paths)
        if c.batch_sizes:
            raise UserError("--batch-sizes applies without --scenario; under load the batch sizes are 1, "
                            f"{MULTI_STREAM} (multi-stream) and --max-batch (offline, dynamic batching)")
        batch_sizes = load_batch_sizes(load["scenarios"], load["batching"], load["max_batch"])
    config = DeployConfig(workloads=workloads or [WORKLOAD], paths=[p.id for p in candidates],
                          batch_sizes=batch_sizes, quantize=list(dict.fromkeys(q)),
                          repeats=c.repeats or DEPLOY_REPEATS, calls=c.calls or DEPLOY_CALLS,
                          threads=resolve_threads(c.threads), timeout_s=c.timeout or TIMEOUT_S,
                          trained_by=trained_by or TRAINED_BY, data_dir=resolve_data_dir(c.data_dir),
                          seed=SEED if c.seed is None else c.seed, max_memory_bytes=c.max_memory,
                          executor=c.executor, ray_address=c.ray_address, keep_artifacts=c.keep_artifacts,
                          device=device, gpus=gpus, **load)
    return config, notes + config.check()  # every workload file and data set validated before any worker


def paths_on_device(candidates: list, device: str, chosen_paths: bool) -> tuple[list, list[str]]:
    """The deployment paths that can serve on ``device`` (``DeployPath.devices``) and the note to show: on a GPU the
    frameworks' own inference; a path asked for by ``--paths`` that cannot is a one-line error before any worker."""
    fit = [p for p in candidates if device in p.devices]
    if len(fit) == len(candidates):
        return candidates, []
    off = [p.id for p in candidates if device not in p.devices]
    if chosen_paths or not fit:
        raise UserError(f"--device {device}: {', '.join(off)} serve on the CPU only here (ONNX Runtime's CPU build, "
                        "LiteRT's and ExecuTorch's interpreters); choose paths that serve on a GPU"
                        + (f" ({', '.join(p.id for p in fit)}) or give --device cpu" if fit else
                           ": the frameworks' own (torch/eager, torch/compile, tensorflow/function, tensorflow/xla, "
                           "jax/jit), or give --device cpu"))
    return fit, [f"on {device}: the paths that serve on a GPU ({', '.join(p.id for p in fit)}); left out, CPU only "
                 f"here: {', '.join(off)}"]


def load_batch_sizes(scenarios: list[str], batching: list[str], max_batch: int) -> list[int]:
    """The batch sizes the load workers serve: 1 (single-stream, server), 8 (multi-stream), ``max_batch`` (offline,
    and the server's dynamic batching)."""
    sizes = {1} if {"single-stream", "server"} & set(scenarios) else set()
    sizes |= {MULTI_STREAM} if "multi-stream" in scenarios else set()
    sizes |= {max_batch} if "offline" in scenarios or ("server" in scenarios and "dynamic" in batching) else set()
    return sorted(sizes)


def resolve_load(c: DeployChoices) -> dict[str, Any]:
    """The serving-under-load fields of a :class:`DeployConfig` from ``--scenario`` and its flags (one-line errors);
    without ``--scenario`` its flags are refused."""
    given = [flag for flag, v in (("--latency-bound", c.latency_bound), ("--duration", c.duration),
                                  ("--concurrency", c.concurrency), ("--batching", c.batching),
                                  ("--max-batch", c.max_batch), ("--max-queue-delay", c.max_queue_delay),
                                  ("--qps", c.qps)) if v is not None]
    if not c.scenario:
        if given:
            raise UserError(f"{', '.join(given)} appl{'ies' if len(given) == 1 else 'y'} to serving under load; "
                            "give --scenario (server, offline, single-stream, multi-stream or all)")
        return {}
    names = list(SCENARIOS) if c.scenario.strip() == "all" else [s.strip() for s in c.scenario.split(",") if s.strip()]
    if bad := [s for s in names if s not in SCENARIOS]:
        raise UserError(f"--scenario: unknown {', '.join(bad)}; choose from {', '.join(SCENARIOS)} or all")
    batching = [b.strip() for b in (c.batching or ",".join(BATCHING)).split(",") if b.strip()]
    if bad := [b for b in batching if b not in ("off", "dynamic")] or not batching:
        raise UserError(f"--batching: unknown {', '.join(bad) or 'nothing'}; choose off, dynamic or off,dynamic")
    for flag, v in (("--latency-bound", c.latency_bound), ("--duration", c.duration),
                    ("--max-queue-delay", c.max_queue_delay)):
        if v is not None and not v > 0:
            raise UserError(f"{flag} must be greater than 0, got {v:g}")
    for flag, v in (("--concurrency", c.concurrency), ("--max-batch", c.max_batch)):
        if v is not None and v < 1:
            raise UserError(f"{flag} must be at least 1, got {v}")
    qps = []
    if c.qps:
        try:
            qps = [float(q) for q in c.qps.split(",") if q.strip()]
        except ValueError:
            raise UserError(f"--qps takes target rates in queries per second, e.g. 1000,5000; got {c.qps!r}") from None
        if not qps or min(qps) <= 0:
            raise UserError(f"--qps needs rates above 0 queries per second; got {c.qps!r}")
    return dict(scenarios=list(dict.fromkeys(names)), batching=list(dict.fromkeys(batching)), qps=qps,
                latency_bound_s=c.latency_bound or LATENCY_BOUND_S, duration_s=c.duration or LOAD_DURATION_S,
                concurrency=c.concurrency or CONCURRENCY, max_batch=c.max_batch or MAX_BATCH,
                max_queue_delay_s=c.max_queue_delay or MAX_QUEUE_DELAY_S)


# ---- isobench parity and isobench peak

@dataclass
class ParityConfig:
    """The resolved configuration of ``isobench parity``: the cells each workload is checked in against the float64
    reference (:func:`~isobench.runner.parity.run_parity`), and how their workers run."""
    cells: dict[str, list[Cell]]  # workload (name or TOML path) -> its cells, in column order
    threads: int = field(default_factory=default_threads)
    timeout_s: float = TIMEOUT_S
    device: str = DEVICE          # "cpu" or "cuda" (resolved: never "auto")
    gpus: list[int] = field(default_factory=list)
    data_dir: str | None = None
    scale: float | None = None    # None: full size, a compute-bound workload at COMPUTE_PARITY_SCALE

    def check(self) -> list[str]:
        check_threads(self.threads)
        if not self.cells:
            raise UserError("no chosen cell can run any of the workloads; see 'isobench list'")
        return []


@dataclass
class ParityChoices:
    """What the user asked ``isobench parity`` for, before validation; ``None`` means the default."""
    workloads: list[str] = field(default_factory=list)  # default: every built-in workload
    frameworks: str | None = None
    modes: str | None = None
    precision: str | None = None
    optimizer: str | None = None
    device: str = DEVICE
    threads: int | None = None
    timeout: float | None = None
    data_dir: str | None = None
    scale: float | None = None


def resolve_parity(c: ParityChoices) -> tuple[ParityConfig, list[str]]:
    """The validated :class:`ParityConfig` of the choices and the notes to show. Every workload file is read and the
    chosen frameworks must be installed (a check compares them all); the cells that cannot build a workload are left
    out (:func:`refusals`): a workload the user named that none can run is an error, a built-in one of the default
    list a note."""
    from .workloads import list_workloads

    entries, data_dir = c.workloads or [w.name for w in list_workloads()], resolve_data_dir(c.data_dir)
    workloads = {e: resolve_workload(e, data_dir, c.scale) for e in entries}
    frameworks, notes = resolve_frameworks(c.frameworks)
    if missing := [f for f in frameworks if not is_installed(get_backend(f))]:
        raise UserError(f"not installed: {', '.join(missing)}; install with: {get_backend(missing[0]).install_hint}")
    modes, mode_notes = resolve_modes(c.modes, frameworks, any(w.optimizer.private for w in workloads.values()))
    optimizers, optimizer_notes = resolve_optimizers(c.optimizer, frameworks)
    device, gpus = resolve_device(c.device, None)
    matrix = RunConfig(entries, frameworks, modes=modes, precisions=resolve_precisions(c.precision),
                       optimizers=optimizers, device=device)
    check_precision_device(matrix.precisions, device)
    if not (cells := matrix.cells()):
        raise UserError("no framework implements the chosen precision(s); see 'isobench list'")
    refused = refusals(workloads, cells, device)
    notes += mode_notes + optimizer_notes + matrix.skipped() + refusal_notes(workloads, cells, refused,
                                                                             required=bool(c.workloads))
    config = ParityConfig({e: ok for e in entries if (ok := [x for x in cells if (e, x) not in refused])},
                          resolve_threads(c.threads), c.timeout or TIMEOUT_S, device, gpus, data_dir, c.scale)
    return config, notes + config.check()


@dataclass
class PeakConfig:
    """The resolved configuration of ``isobench peak``: whose peak is measured, in workers pinned to ``threads``
    CPUs on ``device``."""
    frameworks: list[str]         # keys of backends.peak.FRAMEWORKS; on the CPU numpy's BLAS first (the reference)
    threads: int = field(default_factory=default_threads)
    device: str = DEVICE          # "cpu" or "cuda" (resolved: never "auto")
    force: bool = False           # measure even where a recent measurement is stored

    def check(self) -> list[str]:
        check_threads(self.threads)
        if unknown := [f for f in self.frameworks if f not in PEAK_FRAMEWORKS]:
            raise UserError(f"no peak measurement for {', '.join(unknown)}; choose from: {', '.join(PEAK_FRAMEWORKS)}")
        return []


@dataclass
class PeakChoices:
    """What the user asked ``isobench peak`` for, before validation; ``None`` means the default."""
    frameworks: str | None = None  # comma-separated; default: every installed one of DEFAULT_FRAMEWORKS
    threads: int | None = None
    device: str = DEVICE
    force: bool = False


def resolve_peak(c: PeakChoices) -> tuple[PeakConfig, list[str]]:
    """The validated :class:`PeakConfig` of the choices (numpy added first on the CPU: the framework-neutral
    reference of the machine peak) and the notes to show (none)."""
    frameworks = [f.strip() for f in c.frameworks.split(",") if f.strip()] if c.frameworks else \
        [f for f in DEFAULT_FRAMEWORKS if f in PEAK_FRAMEWORKS and is_installed(get_backend(f))]
    device, _ = resolve_device(c.device, None)
    config = PeakConfig(list(dict.fromkeys((["numpy"] if device == "cpu" else []) + frameworks)),
                        resolve_threads(c.threads), device, c.force)
    return config, config.check()
