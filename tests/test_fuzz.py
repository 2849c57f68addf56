"""Random bytes as a corpus and as a start string: always a clean exit, never a traceback."""

import itertools
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from charnn.cli import main

_runs = itertools.count()
corpora = st.one_of(
    st.binary(max_size=400),
    st.text(max_size=300).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.text(alphabet="ab \n\r\t\ufeff", min_size=20, max_size=300).map(str.encode),
)
starts = st.one_of(
    st.text(max_size=40),
    st.binary(max_size=40).map(lambda b: b.decode("utf-8", "surrogateescape")),
)


def run_main(args: list[str]) -> int:
    """The CLI's exit code, including argparse's own exit for a malformed command line."""
    try:
        return main(args)
    except SystemExit as e:
        return int(e.code or 0)


def check(capsys, code: int) -> None:
    out = capsys.readouterr()
    assert code in (0, 1, 2), (code, out.err)
    assert "Traceback" not in out.err and "internal error" not in out.err, out.err
    if code:
        assert len(out.err.strip().splitlines()) == 1, out.err


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=corpora)
def test_any_bytes_as_a_corpus(capsys, content):
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "corpus.txt"
        data.write_bytes(content)
        code = run_main(["train", "--data", str(data), "--out", str(Path(tmp) / f"run{next(_runs)}"),
                     "--max-steps", "1", "--seq-len", "4", "--batch-size", "2", "--val-fraction", "0.3",
                     "--hidden", "8", "--embedding", "4", "--precision", "fp32", "--quiet"])  # fmt: skip
        check(capsys, code)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(start=starts)
def test_any_start_string(capsys, model_run, start):
    check(capsys, run_main(["generate", str(model_run), f"--start={start}", "--length", "5", "--seed", "1"]))
