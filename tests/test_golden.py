"""The refactored seams render a stored session exactly as isobench did before them: the terminal table and
verdict of ``isobench show``, the JSON and CSV exports and the HTML report's claims, from real sessions loaded into a
fresh database: a training session (seed-mlp, 3 frameworks x 3 repeats, one crashed worker marked lost by the
executor, one record replacing a lost one) and a deployment session made before deployment became a kind of the one
session (``isobench deploy seed-mlp --paths torch/onnx,tensorflow/litert,jax/jit --batch-sizes 1,4 --quantize
none,int8 --repeats 5 --calls 10`` with ``ISOBENCH_FAULT=segfault:tensorflow/litert:4``: an unavailable int8 export,
four crashed serving workers, claims and a row without enough processes) and a serving session (``isobench deploy
seed-mlp --frameworks numpy --quantize none --scenario server,offline --batching off,dynamic --repeats 5 --duration
0.3`` with ``ISOBENCH_FAULT=segfault:numpy/reference:3``: a crashed load worker per row, the server's search, dynamic
batching against none). Regenerate the expected files only for an intended change of output: ``python
tests/test_golden.py``."""
import json
import re
import sys
from html.parser import HTMLParser
from pathlib import Path

from isobench.cli import main
from isobench.report.html import render_html
from isobench.results import ResultSet
from isobench.store import Store

GOLDEN = Path(__file__).parent / "data" / "golden"


class _Claims(HTMLParser):
    """The text of every verdict item and results-table cell of the HTML report, one line each."""

    def __init__(self):
        super().__init__()
        self.section, self.stack, self.lines, self.text = None, [], [], ""

    def handle_starttag(self, tag, attrs):
        if tag == "section":
            self.section = dict(attrs).get("id")
        if tag in ("li", "td", "th") and self.section in ("verdict", "results", "deployment", "serving"):
            self.stack.append(tag)
            self.text = ""

    def handle_endtag(self, tag):
        if self.stack and tag == self.stack[-1]:
            self.stack.pop()
            text = re.sub(r"\s+", " ", self.text).strip()
            self.lines.append(f"{self.section} {tag}: {text}")

    def handle_data(self, data):
        if self.stack:
            self.text += data


def html_claims(html: str) -> str:
    parser = _Claims()
    parser.feed(html)
    return "\n".join(parser.lines) + "\n"


SESSIONS = {"": "session.json", "deploy_": "deploy_session.json",  # prefix of the expected files -> stored session
            "serving_": "serving_session.json"}


def outputs(tmp_path: Path, capsys) -> dict[str, str]:
    out = {}
    for prefix, session in SESSIONS.items():
        db = tmp_path / f"golden-{prefix}.db"
        with Store(db, create=True) as store:
            store.save(ResultSet.from_dict(json.loads((GOLDEN / session).read_text())))
        for name, argv in (("show.txt", ["show"]), ("export.json", ["export"]),
                           ("export.csv", ["export", "--format", "csv"])):
            capsys.readouterr()
            assert main(argv + ["--db", str(db)]) == 0
            out[prefix + name] = capsys.readouterr().out
        with Store(db) as store:
            out[prefix + "html_claims.txt"] = html_claims(render_html(store.load(None)))
    return out


def test_a_stored_session_renders_as_before(tmp_path, capsys):
    for name, text in outputs(tmp_path, capsys).items():
        assert text == (GOLDEN / name).read_text(), f"{name} differs from tests/data/golden/{name}"


if __name__ == "__main__":  # regenerate the expected files
    import tempfile

    class _Capture:
        def __init__(self):
            import io
            self.buf = io.StringIO()

        def readouterr(self):
            class R:
                pass
            r = R()
            r.out = self.buf.getvalue()
            self.buf.seek(0)
            self.buf.truncate()
            return r

    cap = _Capture()
    real = sys.stdout
    sys.stdout = cap.buf
    try:
        with tempfile.TemporaryDirectory() as tmp:
            result = outputs(Path(tmp), cap)
    finally:
        sys.stdout = real
    for name, text in result.items():
        (GOLDEN / name).write_text(text)
        print(f"wrote {GOLDEN / name}")
