"""The command line's arguments: one parser per command, their help texts and argument types (defaults in the
help come from :mod:`isobench.config`, where they are stated once), and the one path from a command's arguments to
its validated configuration (:func:`config_of`)."""
from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from . import __version__
from .config import (BATCHING, CACHE_ENV, COMPUTE_PARITY_SCALE, CONCURRENCY, DEPLOY_BATCH_SIZES, DEPLOY_CALLS,
                     DEPLOY_FRAMEWORKS, DEPLOY_QUANTIZE, DEPLOY_REPEATS, DEVICE, DEVICE_CHOICES, EXECUTOR,
                     LATENCY_BOUND_S, LOAD_DURATION_S, LOAD_MIN_QUERIES, LOAD_QUANTIZE, MAX_BATCH, MAX_QUEUE_DELAY_S,
                     MAX_REPEATS, OPTIMIZER, REPEATS, SEED, SEEDS, TARGET_WIDTH, TIMEOUT_S, TRAINED_BY, WARMUP,
                     WARMUP_WITHOUT_PARITY, WORKLOAD, DeployChoices, ParityChoices, PeakChoices, RunChoices,
                     resolve_deploy, resolve_parity, resolve_peak, resolve_run)
from .errors import UserError
from .runner.executor import EXECUTORS

# exit codes: all good, a run or check failed, bad input (one line on stderr, no traceback), interrupted
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
# every command that runs workers: its choices and the function that resolves them into its validated config and
# the notes to show (isobench.config), so that each goes args -> choices -> resolve -> config
RESOLVERS = {"run": (RunChoices, resolve_run), "deploy": (DeployChoices, resolve_deploy),
             "parity": (ParityChoices, resolve_parity), "peak": (PeakChoices, resolve_peak)}


def resolved(args) -> tuple[Any, list[str]]:
    """(validated config, notes) of the parsed ``args`` of a command of :data:`RESOLVERS`: its choices are the
    arguments of the same names."""
    choices, resolve = RESOLVERS[args.command]
    return resolve(choices(**{k: getattr(args, k) for k in choices.__dataclass_fields__ if hasattr(args, k)}))


def config_of(args) -> Any:
    """The validated config of ``args`` (:func:`resolved`), its notes shown on stderr."""
    config, notes = resolved(args)
    show_notes(notes)
    return config


def show_notes(notes: Iterable[str]) -> None:
    for note in notes:
        print(f"note: {note}", file=sys.stderr)


def output_path(text: str | None, flag: str) -> Path | None:
    """The file an output flag names, ``None`` if not given; a one-line error if its folder does not exist."""
    path = Path(text) if text else None
    if path and not path.parent.is_dir():
        raise UserError(f"{flag}: directory {path.parent} does not exist")
    return path


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line instead of usage + message
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _number(kind: type, expected: str, ok, rule: str):
    """An argument type: text -> ``kind``, else an error naming what was ``expected`` or the ``rule`` broken
    (formatted with the ``value`` and the ``text``)."""
    def convert(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(rule.format(value=value, text=text))
        return value
    return convert


_positive_int = _number(int, "a whole number", lambda v: v >= 1, "must be at least 1, got {value}")
_count = _number(int, "a whole number", lambda v: v >= 0, "must be 0 or more, got {value}")
_positive_float = _number(float, "a number of seconds", lambda v: v > 0, "must be greater than 0, got {text}")
_milliseconds = _number(lambda t: float(t) / 1000, "a number of milliseconds", lambda v: v > 0,
                        "must be greater than 0 ms, got {text}")
_fraction = _number(float, "a fraction such as 0.05", lambda v: 0 < v < 1,
                    "must be between 0 and 1 (0.05 means ±5%), got {text}")


def _memory_size(text: str) -> int:
    """``--max-memory 4G`` / ``512M`` / bytes -> bytes."""
    units = {"k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}
    t = text.strip().lower().removesuffix("ib").removesuffix("b")
    try:
        value = float(t[:-1]) * units[t[-1]] if t and t[-1] in units else float(t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a size such as 4G or 512M, got {text!r}") from None
    if not value >= 2**20:
        raise argparse.ArgumentTypeError(f"must be at least 1M, got {text!r}")
    return int(value)


def build_parser() -> argparse.ArgumentParser:
    """The parser of every command; ``args.command`` names the one chosen."""
    p = _Parser(prog="isobench", description="Train the same workload in PyTorch, TensorFlow and JAX, each in "
                "fresh processes, and compare training time, accuracy and memory with confidence intervals.")
    p.add_argument("--version", action="version", version=f"isobench {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    _run_parser(sub)
    _deploy_parser(sub)
    _session_parsers(sub)
    _parity_parser(sub)
    li = sub.add_parser("list", help="list workloads, frameworks with installed versions, deployment runtimes and "
                        "paths", description="The built-in workloads; the frameworks with their installed versions "
                        "and modes; the deployment runtimes with their versions and every deployment path with its "
                        "runtime, precisions, batch handling (dynamic: one exported model serves every batch size; "
                        "static per batch size: one exported file per batch size; native: the framework builds the "
                        "model from the weights) and exporter.")
    li.add_argument("--flops", action="store_true", help="instead: every built-in workload's FLOPs per training step "
                    "(total and matmul), per epoch and per run, parameters, modelled bytes per step and arithmetic "
                    "intensity, counted from the spec (docs/efficiency.md)")
    li.add_argument("--scale", type=_positive_float, metavar="F", help="with --flops: also count the compute-bound "
                    "workloads (resnet18, gpt2-small, bert-base) at scale 0 < F <= 1")
    _peak_parser(sub)
    en = sub.add_parser("env", help="print the environment record of this machine")
    en.add_argument("--json", action="store_true", help="print it as JSON")
    return p


ARGUMENTS = {  # flag -> the keywords of add_argument; each command adds its flags in the order of its --help
    "--frameworks": dict(metavar="LIST", help="comma-separated frameworks to compare: torch, tensorflow, jax, "
                         "keras-torch, keras-tensorflow, keras-jax (also numpy, the float64 reference); default: "
                         "every one of torch, tensorflow, jax that is installed"),
    "--threads": dict(type=_positive_int, metavar="N", help="CPU cores each worker is pinned to (affinity) and its "
                      "thread pools' size, at most the cores this process may use; default: all of them"),
    "--timeout": dict(type=_positive_float, metavar="SECONDS", help="kill a worker that runs longer than this and "
                      f"record it as 'timeout' (default {TIMEOUT_S:g})"),
    "--modes": dict(metavar="LIST", help="execution modes to compare: 'all' (every mode of every framework), "
                    "'default' (each framework's first mode; the default), or a comma-separated list of MODE (every "
                    "framework that has it) and FRAMEWORK=MODE items, e.g. eager,compile or "
                    "torch=compile,tensorflow=xla. Modes: torch eager|compile, tensorflow graph|eager|xla, jax "
                    "jit|eager, keras-* fit (see 'isobench list')"),
    "--precision": dict(metavar="LIST", help="fp32 (default: float32 with TF32 off in every framework), bf16 or fp16 "
                        "(each framework's own mixed precision: float32 weights, low-precision compute, fp16 with "
                        "loss scaling), tf32 (--device cuda only: float32 on TF32 tensor cores; torch, tensorflow, "
                        "jax), a comma-separated list, or all (fp32, bf16, fp16)"),
    "--optimizer": dict(metavar="LIST", help=f"optimizer implementations to compare: library (default "
                        f"{OPTIMIZER}: each framework's own optimizer library as a user's script calls it, every "
                        "hyperparameter explicit: torch.optim with its default kernels, optax, Keras optimizers), "
                        "neutral (isobench's own update rules written in each framework, the float64 reference's "
                        "arithmetic; torch.optim with its fastest exact kernels in PyTorch), a comma-separated list, "
                        "or all. Where a library's rule differs by design (Keras's Adam epsilon, its SGD momentum "
                        "under a changing rate), parity states it and applies its tolerances (docs/measurement.md)"),
    "--device": dict(choices=DEVICE_CHOICES, default=DEVICE, help="where workers train: cpu (default; GPUs hidden "
                     "from every framework), cuda (one GPU per worker, allocator peak reported as device memory) or "
                     "auto (cuda if nvidia-smi lists a GPU)"),
    "--gpus": dict(metavar="LIST", help="with --device cuda: GPU indices such as 0,1; independent cells run in "
                   "parallel, one worker per GPU (default: GPU 0 only, one worker at a time)"),
    "--max-memory": dict(type=_memory_size, metavar="SIZE", help="kill a worker whose resident memory (worker and its "
                         "children, polled every 0.1 s) exceeds SIZE (e.g. 4G, 512M) and record it as "
                         "'out_of_memory' with the peak seen; default: no cap"),
    "--resume": dict(metavar="SESSION", help="continue a stored session of this command (e.g. one interrupted by "
                     "Ctrl-C): run only the units of its plan (training cells; exports and serving processes) that "
                     "have no record yet (or were lost with a Ray node), with its stored configuration, and add them "
                     "to it"),
    "--executor": dict(choices=tuple(EXECUTORS), default=EXECUTOR, help="where worker processes run: local (default: "
                       "this machine) or ray (Ray tasks on a cluster, each launching the same fresh worker process; "
                       "needs pip install 'isobench[ray]')"),
    "--ray-address": dict(metavar="ADDRESS", help="with --executor ray: the cluster to join, e.g. ray://head:10001 "
                          "or head:6379 (default: $RAY_ADDRESS, else a local Ray instance started for this run)"),
    "--data-dir": dict(metavar="DIR", help="folder with real data files: MNIST/Fashion-MNIST IDX files (lenet5) or "
                       "the CIFAR-10 python batches (resnet-mini); nothing is downloaded"),
    "--scale": dict(type=_positive_float, metavar="F",
                    help="multiply the size of synthetic data sets (resnet-mini, gpt-tiny) by F; for the compute-bound "
                    "workloads (resnet18, gpt2-small, bert-base) 0 < F <= 1 shrinks model widths, depth, image size "
                    "or context, vocabulary and data together (docs/workloads.md); their parity check runs at "
                    f"scale {COMPUTE_PARITY_SCALE:g} (or a smaller F) unless 'isobench parity --scale F' asks"),
    "--repeats": dict(type=_positive_int, metavar="N", help="worker processes per framework and workload; the "
                      f"process is the unit of replication (default {REPEATS})"),
    "--seed": dict(type=int, help=f"seed of the interleaved run order (default {SEED})"),
    "--warmup": dict(type=_count, metavar="N", help="N fresh warm-up workers per cell before the measured repeats, "
                     "in their own shuffled blocks: they run exactly like a measured worker (page cache, compiler "
                     "caches on disk), are stored and listed as warm-ups, and never enter the statistics "
                     f"(default {WARMUP} after the parity check, which has loaded every framework already; "
                     f"{WARMUP_WITHOUT_PARITY} with --no-parity; docs/measurement.md says why)"),
    "--seeds": dict(type=_positive_int, metavar="N", help="train repeat r of every framework from seed s + (r mod "
                    "N), s the workload's seed: N sets of initial weights, epoch orders and dropout, the same N for "
                    "every framework, on the same data split. Test accuracy then varies between repeats and can be "
                    f"compared; with the default {SEEDS} every repeat is the identical, deterministic training (no "
                    "accuracy claim). Needs --repeats >= N"),
    "--json": dict(metavar="PATH", help="write every run record (schema in README) to this file, rewritten after "
                   "each run"),
    "--db": dict(metavar="PATH", help="results database (SQLite); default: $ISOBENCH_DB if set, else "
                 "./isobench-results/isobench.db"),
    "--no-store": dict(action="store_true", help="do not record this session in the results database"),
    "--no-peak": dict(action="store_true", help="skip the machine's peak (a recent stored 'isobench peak' "
                      "measurement, else one worker per framework before measuring): %% of peak is then not measured"),
    "--no-counterpart": dict(action="store_true", help="run a private built-in (dp-mlp, dp-lenet5) without its "
                             "non-private counterpart (seed-mlp, lenet5), which otherwise runs in the same session, "
                             "interleaved, for the cost-of-privacy table"),
    "--no-parity": dict(action="store_true", help="skip the parity check (one worker per framework and workload, "
                        "before measuring) that proves the frameworks do identical work; the first worker of each "
                        f"cell then reads the framework's files cold, so --warmup defaults to {WARMUP_WITHOUT_PARITY}"),
    "--until-confident": dict(action="store_true", help="after --repeats, add interleaved repeats of every cell "
                              "until each framework's training-time and steady-step-time ratio to the best has a "
                              "95%% interval within --target-width, or --max-repeats is reached"),
    "--target-width": dict(type=_fraction, metavar="FRACTION", help="with --until-confident: the interval's "
                           f"half-width as a fraction of the ratio (default {TARGET_WIDTH:g}, i.e. "
                           f"±{100 * TARGET_WIDTH:g}%%)"),
    "--max-repeats": dict(type=_positive_int, metavar="N", help="with --until-confident: stop after this many "
                          f"repeats even if not confident (default {MAX_REPEATS})"),
    "session": dict(metavar="SESSION", nargs="?", help="session id, see 'isobench history' (default: the latest)"),
}
MEASURED = ("--frameworks", "--threads", "--timeout", "--modes", "--precision", "--optimizer",
            "--device")  # run and parity


def _add(parser, *names: str) -> None:
    for name in names:
        parser.add_argument(name, **ARGUMENTS[name])


def _run_parser(sub) -> None:
    r = sub.add_parser("run", help="measure workloads in every framework and print the comparison",
                       description="Run every (workload, framework) cell --repeats times, each in a fresh worker "
                       "process, in a seeded interleaved order; then print the table and verdict. A cell that cannot "
                       "build a workload (dp-sgd outside fp32, a Keras cell of a dp-sgd workload) is left out when the "
                       "session is planned, with a note; a workload that no chosen cell can build is an error.")
    r.add_argument("workloads", nargs="*", metavar="WORKLOAD",
                   help=f"built-in workload names or TOML workload files (default: {WORKLOAD}); see docs/workloads.md")
    _add(r, *MEASURED, "--gpus", "--max-memory", "--resume", "--executor", "--ray-address", "--data-dir", "--scale",
         "--repeats", "--warmup", "--seed", "--seeds", "--json", "--db", "--no-store", "--no-parity", "--no-peak",
         "--no-counterpart", "--until-confident", "--target-width", "--max-repeats")


def _deploy_parser(sub) -> None:
    d = sub.add_parser("deploy", help="serve the same trained model natively and from exported artifacts on "
                       "deployment runtimes; compare cold start, latency, throughput, size, memory and accuracy",
                       description="Train each workload's weights once (cached), export them along every deployment "
                       "path (one fresh worker per path and precision), then serve each artifact in fresh worker "
                       "processes, one per path, precision and repeat serving every batch size, in a seeded "
                       "interleaved order: cold start, per-call latency p50/p90/p99, throughput, artifact size, peak "
                       "RSS, test accuracy and loss, and the largest logit difference to the float64 reference (fp32 "
                       "rows must pass it; exit 1 if not). Method: docs/measurement.md, Deployment.")
    d.add_argument("workloads", nargs="*", metavar="WORKLOAD",
                   help=f"built-in workload names or TOML workload files (default: {WORKLOAD})")
    d.add_argument("--frameworks", metavar="LIST", help="comma-separated frameworks whose deployment paths are "
                   f"measured (default: {','.join(DEPLOY_FRAMEWORKS)}; numpy: the float64 reference path only)")
    d.add_argument("--paths", "--runtimes", dest="paths", metavar="LIST", help="only these paths: path ids "
                   "(torch/onnx), path names (onnx: every chosen framework's) or runtimes (onnxruntime, litert); "
                   "see 'isobench list' (default: every path of the chosen frameworks)")
    d.add_argument("--batch-sizes", metavar="LIST", help="comma-separated batch sizes, served in turn by every "
                   f"serving process, smallest first (default: {','.join(map(str, DEPLOY_BATCH_SIZES))}; 1 is "
                   "single-stream latency, larger ones give throughput)")
    d.add_argument("--quantize", metavar="LIST", help=f"precisions: none (fp32), int8 (post-training, calibrated on "
                   f"training examples, where the path offers it) (default: {','.join(DEPLOY_QUANTIZE)}; with "
                   f"--scenario {','.join(LOAD_QUANTIZE)})")
    d.add_argument("--repeats", type=_positive_int, metavar="N", help="serving processes per (path, precision); "
                   f"the process is the unit of the statistics (default {DEPLOY_REPEATS}; claims need 4)")
    d.add_argument("--calls", type=_positive_int, metavar="N", help="timed calls per serving process after warm-up, "
                   f"each timed with perf_counter_ns (default {DEPLOY_CALLS})")
    d.add_argument("--trained-by", metavar="FRAMEWORK", help="who trains the served weights once per workload: numpy "
                   f"(the float64 reference, default {TRAINED_BY}) or torch, tensorflow, jax; cached in "
                   f"${CACHE_ENV} (default ~/.cache/isobench)")
    d.add_argument("--keep-artifacts", metavar="DIR", help="keep the exported artifacts in DIR/session-N (default: "
                   "beside the results database, in artifacts/session-N; without a database, a temporary folder "
                   "removed at the end); the JSON and the records point at them, and --resume serves them")
    d.add_argument("--device", choices=DEVICE_CHOICES, default=DEVICE, help="where serving workers run the model: "
                   "cpu (default; every path), cuda (one GPU per worker, host batches in and host logits out of "
                   "each timed call: the frameworks' own paths, torch/eager, torch/compile, tensorflow/function, "
                   "tensorflow/xla and jax/jit; the runtimes installed here serve on the CPU only) or auto")
    d.add_argument("--gpus", metavar="LIST", help="with --device cuda: GPU indices such as 0,1; serving processes run "
                   "in parallel, one per GPU (default: GPU 0 only, one at a time)")
    load = d.add_argument_group("serving under load (MLPerf LoadGen scenarios; docs/measurement.md, Serving under "
                                "load)")
    load.add_argument("--scenario", metavar="LIST", help="serve each path under LoadGen instead of one call at a "
                      "time: server (Poisson arrivals; the largest QPS whose p99 meets --latency-bound), offline "
                      "(every sample at once; samples/s), single-stream, multi-stream (8 samples per query), a "
                      "comma-separated list or all; one fresh worker per path, precision, scenario, batching and "
                      "repeat")
    load.add_argument("--latency-bound", type=_milliseconds, metavar="MS", help="server: the p99 latency a QPS must "
                      f"meet, in ms (default {LATENCY_BOUND_S * 1e3:g})")
    load.add_argument("--duration", type=_positive_float, metavar="SECONDS", help="each LoadGen run's minimum "
                      f"duration (default {LOAD_DURATION_S:g}; with at least {LOAD_MIN_QUERIES} queries, enough for "
                      "LoadGen's early-stopping p99)")
    load.add_argument("--concurrency", type=_positive_int, metavar="N", help="the server's executing threads, each "
                      f"with its own loaded model (default {CONCURRENCY}; --threads is shared among them)")
    load.add_argument("--batching", metavar="LIST", help="off (one sample per call), dynamic (queued samples served "
                      "together, up to --max-batch, waiting at most --max-queue-delay for more) or off,dynamic to "
                      f"measure both (default {','.join(BATCHING)})")
    load.add_argument("--max-batch", type=_positive_int, metavar="N", help="dynamic batching's largest batch and "
                      f"the offline scenario's batch (default {MAX_BATCH})")
    load.add_argument("--max-queue-delay", type=_milliseconds, metavar="MS", help="dynamic batching: the longest a "
                      f"sample waits for others, in ms (default {MAX_QUEUE_DELAY_S * 1e3:g})")
    load.add_argument("--qps", metavar="LIST", help="server: run at these target queries per second (e.g. "
                      "1000,5000) instead of searching for the largest valid one")
    _add(d, "--threads", "--timeout", "--max-memory", "--resume", "--executor", "--ray-address", "--data-dir",
         "--seed", "--json", "--db", "--no-store")


def _session_parsers(sub) -> None:
    """The commands that read the results database."""
    hi = sub.add_parser("history", help="list the sessions in the results database",
                        description="One line per recorded session: id, date, workloads, frameworks, runs ok/failed, "
                        "parity result and status (running, finished, interrupted, failed).")
    _add(hi, "--db")
    sh = sub.add_parser("show", help="print a stored session's table and verdict again, without rerunning",
                        description="Re-render the results table, verdict, parity result and failures of a stored "
                        "session from the results database.")
    _add(sh, "session", "--db")
    ex = sub.add_parser("export", help="write a stored session as JSON or tidy CSV",
                        description="Write a stored session: json is the same document as 'isobench run --json'; csv "
                        "is tidy, one row per worker process with its spec, status and every scalar metric (seconds, "
                        "bytes, samples/s, accuracy as a fraction), readable with pandas.read_csv.")
    _add(ex, "session")
    ex.add_argument("--format", choices=("json", "csv"), default="json", help="output format (default json)")
    ex.add_argument("--output", metavar="PATH", help="write to this file instead of standard output")
    _add(ex, "--db")
    co = sub.add_parser("compare", help="compare two stored sessions metric by metric, flagging regressions",
                        description="For every (workload, framework, mode) in both sessions: per metric (training "
                        "time, steady step time, first step, test accuracy, training-peak RSS) the ratio B/A of "
                        "medians with a bootstrap 95%% interval, the Mann-Whitney p and a flag: regression or "
                        "improvement when the interval excludes 1 and p < 0.05, else no significant change.")
    co.add_argument("session_a", metavar="SESSION_A", help="the baseline session id (see 'isobench history')")
    co.add_argument("session_b", metavar="SESSION_B", nargs="?",
                    help="the session compared with it (default: the latest)")
    _add(co, "--db")
    rp = sub.add_parser("report", help="write a stored session as an HTML page and/or a Markdown article",
                        description="Write the report of a stored session: a self-contained HTML file with inline "
                        "plots, and/or a Markdown article with PNG plots beside it.")
    _add(rp, "session")
    rp.add_argument("--html", metavar="PATH", help="write a self-contained HTML report (works offline)")
    rp.add_argument("--markdown", metavar="PATH", help="write a Markdown report, its PNG plots beside it")
    _add(rp, "--db")


def _parity_parser(sub) -> None:
    pa = sub.add_parser("parity", help="prove the frameworks do identical work (exit 1 if not)",
                        description="Train each workload once per framework from identical weights, data and order "
                        "and compare initial logits, step-0 gradients, per-step and per-epoch losses and test "
                        "accuracy with a float64 numpy reference, against tolerances stated per workload. A cell "
                        "that cannot build a workload (dp-sgd outside fp32, a Keras cell of a dp-sgd workload) is "
                        "left out with a note; a named workload that no chosen cell can build is an error.")
    pa.add_argument("workloads", nargs="*", metavar="WORKLOAD",
                    help="built-in workload names or TOML workload files (default: every built-in workload that a "
                    "chosen cell can build)")
    _add(pa, *MEASURED, "--data-dir", "--scale")


def _peak_parser(sub) -> None:
    pk = sub.add_parser("peak", help="measure the machine's peak matmul GFLOP/s and copy bandwidth per framework",
                        description="Measure, per framework in a fresh worker pinned like a run, the sustained square "
                        "matmul rate (fp32, bf16; TF32 and fp16 on cuda) and the bandwidth of a large copy; store them "
                        "in the results database. A stored measurement of the same host, CPU, framework version, "
                        "device and threads younger than 7 days is shown instead unless --force.")
    pk.add_argument("--frameworks", metavar="LIST", help="comma-separated: numpy, torch, tensorflow, jax (default: "
                    "every one of torch, tensorflow, jax that is installed)")
    _add(pk, "--threads", "--device", "--db")
    pk.add_argument("--force", action="store_true", help="measure again even when a recent measurement is stored")
