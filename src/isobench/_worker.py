"""Worker bootstrap: ``python -m isobench._worker TASK.json RESULT.json``.

Pins CPU affinity and thread variables before anything imports numpy or a framework (both read
them once at import), then hands over to :mod:`isobench.runner.worker`."""
import json
import sys

from .measure.threads import pin

if __name__ == "__main__":
    task = json.load(open(sys.argv[1]))
    pinned = pin(task["spec"]["threads"])
    if task.get("kind") in ("export", "serve"):  # isobench deploy
        from .runner.deploy_worker import run
    else:
        from .runner.worker import run

    run(sys.argv[1:], pinned)
