"""The README cannot rot: its Python example runs as printed, through the public API of ``isobench``, on a tiny
config (the numpy reference, one repeat, one thread, without the parity check and the machine's peak), and its
command table names every flag of every command."""
import re
import subprocess
import sys
from pathlib import Path

import isobench
from isobench.cli_args import build_parser
from isobench.config import RunConfig
from isobench.runner.session import run_benchmark

README = Path(__file__).resolve().parent.parent / "README.md"


def python_example() -> str:
    text = README.read_text()
    blocks = re.findall(r"```python\n(.*?)```", text[text.index("callable from Python"):], re.S)
    assert blocks and "from isobench import" in blocks[0], "the README's Python example imports from isobench"
    return blocks[0]


def test_the_public_api_is_lazy_and_complete():
    assert set(isobench.__all__) >= {"RunConfig", "DeployConfig", "run_benchmark", "run_session", "ResultSet",
                                     "summarize", "Store", "open_store", "render_results", "write_html",
                                     "write_markdown", "__version__"}
    for name in isobench.__all__:
        assert getattr(isobench, name) is not None, name
    # a worker importing an isobench module loads none of them (nor numpy: its CPUs are pinned first)
    loaded = subprocess.run([sys.executable, "-c", "import sys, isobench.measure.threads; print(*sorted(sys.modules))"],
                            capture_output=True, text=True, check=True).stdout.split()
    assert not {"numpy", "isobench.config", "isobench.runner", "isobench.stats", "isobench.store"} & set(loaded)


def test_the_readme_python_example_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ISOBENCH_DB", str(tmp_path / "r.db"))
    monkeypatch.setattr(isobench, "RunConfig", lambda **kw: RunConfig(**{**kw, "frameworks": ["numpy"], "repeats": 1,
                                                                         "threads": 1}))
    monkeypatch.setattr(isobench, "run_benchmark",
                        lambda config, **kw: run_benchmark(config, parity=False, peaks=False, **kw))
    exec(compile(python_example(), str(README), "exec"), {})
    out = capsys.readouterr().out
    assert "training time" in out and "NumPy" in out
    assert (tmp_path / "seed-mlp.html").stat().st_size > 0
    with isobench.open_store(None) as store:
        assert len(store.sessions()) == 1


def test_the_command_table_names_every_flag():
    commands = next(a for a in build_parser()._actions if a.dest == "command").choices
    rows = README.read_text().splitlines()
    for name, parser in commands.items():
        text = " ".join(r for r in rows if r.startswith("| `isobench ") and  # the command cell names the command
                        re.search(f"`isobench {name}[ `]", r.split("` | ")[0]))
        flags = {o for a in parser._actions for o in a.option_strings if o.startswith("--") and o != "--help"}
        assert text and not sorted(f for f in flags if f not in text), name
