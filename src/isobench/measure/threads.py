"""Thread and affinity settings applied by a worker before any framework is imported."""
from __future__ import annotations

import os

# Read by OpenMP, MKL, OpenBLAS and by TensorFlow at start-up; set before the import that reads them.
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "TF_NUM_INTRAOP_THREADS",
              "TF_NUM_INTEROP_THREADS")


def available_cpus() -> list[int]:
    """CPUs this process may run on (its affinity mask), sorted."""
    return sorted(os.sched_getaffinity(0))


def default_threads() -> int:
    return len(available_cpus())


def pin(threads: int) -> dict:
    """Restrict this process to the first ``threads`` allowed CPUs and set the thread environment.

    Returns what is in effect afterwards. Must run before a framework is imported."""
    cpus = available_cpus()
    if not 1 <= threads <= len(cpus):
        raise ValueError(f"threads must be between 1 and {len(cpus)} (the CPUs this process may use)")
    os.sched_setaffinity(0, cpus[:threads])
    for var in THREAD_ENV:
        os.environ[var] = str(threads)
    return {"threads": threads, "affinity": sorted(os.sched_getaffinity(0)),
            "env": {v: os.environ[v] for v in THREAD_ENV}}
