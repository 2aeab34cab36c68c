"""Worker bootstrap: ``python -m isobench._worker TASK.json RESULT.json``.

Pins CPU affinity and thread variables before anything imports numpy or a framework (both read them once at
import), reads the task once, then runs the worker function its ``kind`` names in the one table of worker kinds
(:data:`isobench.runner.jobs.WORKERS`) and exits with its code, skipping the interpreter's teardown (some frameworks'
thread pools make a normal exit slow)."""
import importlib
import json
import os
import sys

from .measure.threads import pin

if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        task = json.load(f)
    pinned = pin(task["spec"]["threads"])
    from .runner.jobs import CELL, WORKERS

    module, function = WORKERS[task.get("kind", CELL)].split(":")
    code = getattr(importlib.import_module(module), function)(task, sys.argv[2], pinned)
    sys.stdout.flush(), sys.stderr.flush()
    os._exit(code)
