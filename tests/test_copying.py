"""`charnn copying` end to end: generated samples and given texts against the training text, beside the
validation text's figures; and each bad input as one clear line."""

import json
import os
import shutil
import subprocess
import sys

import pytest

import charnn
import charnn.copy_report
from charnn.copy_report import copying_report
from conftest import PARAGRAPH, assert_clean_error, run_cli


def test_report_of_samples_with_the_validation_calibration(trained_run):
    result = run_cli("copying", str(trained_run), "--samples", "2", "--length", "150", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["checked"]["chars"] == 300 and report["validation"]["chars"] == 300
    assert set(report["checked"]["copied_share"]) == {"20", "50", "100"}
    assert set(report["checked"]["novel_ngrams"]) == {"8", "16"}
    # the validation text repeats the training paragraph: unseen, yet all of it is in the training text
    assert report["validation"]["copied_share"]["100"] == 1.0
    assert report["validation"]["longest"]["file"].endswith("corpus.txt")
    assert "unseen text" in report["verdict"]
    text = run_cli("copying", str(trained_run), "--samples", "2", "--length", "150")
    assert "validation text (never seen)" in text.stdout and "longest copied span" in text.stdout


def test_a_given_text_copied_from_the_corpus_is_found_with_its_line(trained_run, tmp_path):
    copied = PARAGRAPH[:120]
    path = tmp_path / "mine.txt"
    path.write_text("zzzz " + copied, encoding="utf-8")
    report = copying_report(trained_run, text=str(path), spans="20,100")
    longest = report["checked"]["longest"]
    assert longest["length"] >= 120 and longest["text"].startswith(copied[:100])
    assert (longest["line"] - 1) % PARAGRAPH.count("\n") == 0  # a paragraph's first line: it repeats
    assert report["checked"]["copied_share"]["100"] >= 120 / 125
    stdin = run_cli("copying", str(trained_run), "--text", "-", "--json", stdin=copied)
    assert json.loads(stdin.stdout)["checked"]["longest"]["length"] == 120


def test_a_moved_corpus_needs_data_and_works_with_it(trained_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained_run / "model", run / "model")
    config = json.loads((run / "model" / "config.json").read_text())
    moved = tmp_path / "moved.txt"
    shutil.copy(config["training"]["data"], moved)
    config["training"]["data"] = str(tmp_path / "gone.txt")
    (run / "model" / "config.json").write_text(json.dumps(config))
    assert_clean_error(run_cli("copying", str(run), "--samples", "1"), "no longer there; pass --data")
    ok = run_cli("copying", str(run), "--samples", "1", "--length", "50", "--data", str(moved), "--json")
    assert ok.returncode == 0 and json.loads(ok.stdout)["data"] == str(moved)


def test_bad_inputs_are_one_clear_line(trained_run, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    assert_clean_error(run_cli("copying", str(trained_run), "--text", str(empty)), "empty")
    odd = tmp_path / "odd.txt"
    odd.write_text("Speak€ speak~")
    assert_clean_error(run_cli("copying", str(trained_run), "--text", str(odd)), "never saw", "'€'", "'~'")
    assert_clean_error(run_cli("copying", str(trained_run), "--spans", "20,x"), "--spans")
    for digits in ("²", "20,³", "٣"):  # digits to str.isdigit, not all of them to int(): none is ASCII
        assert_clean_error(run_cli("copying", str(trained_run), "--spans", digits), "--spans", repr(digits))
    missing = str(tmp_path / "nope.txt")
    assert_clean_error(run_cli("copying", str(trained_run), "--text", missing), "nope.txt")
    assert_clean_error(run_cli("copying", str(trained_run), "--samples", "0"), "--samples")


def test_training_records_a_sample_copy_figures_at_each_validation(tmp_path):
    data = tmp_path / "c.txt"
    data.write_text(PARAGRAPH * 60, encoding="utf-8")
    charnn.train(
        tmp_path / "run",
        data=str(data),
        max_steps=20,
        eval_every=10,
        quiet=True,
        hidden=16,
        embedding=8,
        seq_len=16,
        batch_size=4,
        precision="fp32",
    )
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    evals = [x for x in lines if "val_loss" in x]
    assert len(evals) >= 2
    for x in evals:
        assert 0 <= x["copied_20"] <= 1 and 0 <= x["copied_50"] <= x["copied_20"]
        assert x["copy_longest"] >= 1 and x["copy_probe_s"] >= 0


def test_a_byte_order_mark_at_the_start_of_the_text_is_dropped(trained_run, tmp_path):
    path = tmp_path / "bom.txt"
    path.write_bytes(b"\xef\xbb\xbf" + PARAGRAPH[:120].encode("utf-8"))
    for args, stdin in ((["--text", str(path)], None), (["--text", "-"], "\ufeff" + PARAGRAPH[:120])):
        result = run_cli("copying", str(trained_run), *args, "--json", stdin=stdin)
        assert result.returncode == 0, result.stderr
        checked = json.loads(result.stdout)["checked"]
        assert checked["chars"] == 120 and checked["longest"]["length"] == 120


def test_damaged_index_metadata_in_the_cache_is_rebuilt(trained_run, tmp_path, monkeypatch):
    monkeypatch.setenv("CHARNN_CACHE_DIR", str(tmp_path / "cache"))  # a cache holding this index alone
    path = tmp_path / "mine.txt"
    path.write_text("zzzz " + PARAGRAPH[:120], encoding="utf-8")
    before = run_cli("copying", str(trained_run), "--text", str(path), "--json")
    assert before.returncode == 0, before.stderr
    (meta,) = (tmp_path / "cache" / "corpora").glob("*.sa.json")
    meta.write_text("null")
    after = run_cli("copying", str(trained_run), "--text", str(path), "--json")
    assert after.returncode == 0, after.stderr
    assert json.loads(after.stdout)["checked"] == json.loads(before.stdout)["checked"]
    assert isinstance(json.loads(meta.read_text()), dict)  # rebuilt and kept


def test_a_given_text_is_read_as_a_user_would_expect(trained_run, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "mine.txt").write_text("All:\r\nSpeak, speak.\r\n")
    tilde = run_cli("copying", str(trained_run), "--text", "~/mine.txt", "--json")
    assert tilde.returncode == 0, tilde.stderr  # ~ as every other path flag takes it; CRLF as LF
    missing = run_cli("copying", str(trained_run), "--text", "~/nope.txt")
    assert_clean_error(missing, "~/nope.txt: no such file")
    assert_clean_error(run_cli("copying", str(trained_run), "--text", str(tmp_path)), "a folder, not a text")
    bytes_in = subprocess.run(
        [sys.executable, "-m", "charnn", "copying", str(trained_run), "--text", "-"],
        input=b"All: caf\xe9",
        capture_output=True,
    )
    assert bytes_in.returncode == 1 and b"-: not valid utf-8 at byte 8" in bytes_in.stderr


@pytest.mark.parametrize("closed", ["stdin", "stdout"])
def test_a_closed_stdin_or_stdout_is_one_line(trained_run, closed):
    args = ["copying", str(trained_run), "--text", "-"] if closed == "stdin" else ["info", str(trained_run)]
    fd = 0 if closed == "stdin" else 1
    done = subprocess.run(
        [sys.executable, "-m", "charnn", *args], stderr=subprocess.PIPE, preexec_fn=lambda: os.close(fd)
    )
    lines = done.stderr.decode().strip().splitlines()
    assert done.returncode == 1 and len(lines) == 1 and lines[0].startswith("charnn: error: "), done.stderr
    assert f"{closed} is closed" in lines[0]


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full (an always-full device)")
@pytest.mark.parametrize("command", [["info"], ["generate", "--length", "50", "--seed", "1"]])
def test_stdout_on_a_full_device_is_named(trained_run, command):
    with open("/dev/full", "w") as full:
        done = subprocess.run(
            [sys.executable, "-m", "charnn", command[0], str(trained_run), *command[1:]],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
        )
    assert done.returncode == 1, done.stderr
    assert done.stderr == "charnn: error: cannot write the output to stdout (No space left on device)\n"


def a_model_of(tmp_path, name: str, text: str, **settings) -> str:
    """A tiny model trained (30 steps) on `text`, written as it is (no newline translation)."""
    data = tmp_path / f"{name}.txt"
    data.write_bytes(text.encode(settings.get("encoding", "utf-8")))
    flags = {"hidden": 16, "embedding": 8, "seq_len": 16, "batch_size": 4, "precision": "fp32"}
    charnn.train(tmp_path / name, data=str(data), max_steps=30, quiet=True, **{**flags, **settings})
    return str(tmp_path / name)


def test_samples_of_a_model_whose_text_has_no_newline_begin_after_its_first_char(tmp_path):
    model = a_model_of(tmp_path, "oneline", "the cat sat on the mat. " * 300)
    report = charnn.copying(model, samples=2, length=50)
    assert report["what"] == "2 samples of 50 chars" and report["checked"]["chars"] == 100
    one = charnn.copying(model, samples=1, length=1)
    assert one["what"] == "1 sample of 1 char"
    assert "n/a (shorter than the n-grams)" in charnn.copy_report.format_report(one)


def test_a_given_text_is_read_as_the_training_text_was(tmp_path):
    """An excerpt of a model's own training file is never refused: lone CRs (old Mac text) stay CRs, and a
    latin-1 model's text is read as latin-1."""
    mac = a_model_of(tmp_path, "mac", "All:\rSpeak, speak.\r" * 300)
    (tmp_path / "mac-excerpt.txt").write_bytes(b"All:\rSpeak, speak.\rAll:\r")
    assert charnn.copying(mac, file=str(tmp_path / "mac-excerpt.txt"))["checked"]["chars"] == 24
    latin = a_model_of(tmp_path, "latin", "café au lait, ça va. " * 300, encoding="latin-1")
    (tmp_path / "latin-excerpt.txt").write_bytes("ça va, café".encode("latin-1"))
    assert charnn.copying(latin, text=str(tmp_path / "latin-excerpt.txt"))["checked"]["chars"] == 11


def test_file_is_the_flag_text_its_older_spelling_and_literal_text_gets_a_hint(trained_run, tmp_path):
    (tmp_path / "mine.txt").write_text(PARAGRAPH[:100])
    for flag in ("--file", "--text"):
        done = run_cli("copying", str(trained_run), flag, str(tmp_path / "mine.txt"), "--json")
        assert done.returncode == 0 and json.loads(done.stdout)["what"].endswith("mine.txt"), done.stderr
    literal = run_cli("copying", str(trained_run), "--text", "the cat sat on")
    assert_clean_error(literal, "the cat sat on: no such file; --file (or --text) names the file to check")
    stdin = run_cli("copying", str(trained_run), "--file", "-", "--json", stdin=PARAGRAPH[:50])
    assert json.loads(stdin.stdout)["what"] == "stdin"


def test_the_training_text_is_found_before_any_sample_is_drawn(trained_run, tmp_path, monkeypatch):
    moved = tmp_path / "moved"
    shutil.copytree(trained_run, moved)
    config = moved / "model" / "config.json"
    info = json.loads(config.read_text())
    info["training"]["data"] = str(tmp_path / "gone.txt")
    config.write_text(json.dumps(info))
    monkeypatch.setattr(charnn.copy_report, "_samples", lambda *a: pytest.fail("sampled first"))
    with pytest.raises(charnn.CharnnError, match="no longer there"):
        charnn.copying(charnn.load(moved, verify=False))


def test_a_training_text_that_gained_a_new_char_is_changed_not_a_vocabulary_error(tmp_path):
    model = a_model_of(tmp_path, "grown", PARAGRAPH * 20)
    with (tmp_path / "grown.txt").open("a") as f:
        f.write("Zebra!\n")  # 'Z' and 'b' are new chars
    for call in (lambda: charnn.copying(model, samples=1, length=10), lambda: charnn.evaluate(model)):
        with pytest.raises(charnn.CharnnError, match="the text changed since the model was trained on it"):
            call()


def test_the_api_takes_verify_and_names_what_is_not_a_model(trained_run, tmp_path):
    tampered = tmp_path / "tampered"
    shutil.copytree(trained_run, tampered)
    weights = tampered / "model" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-4] + b"\0\0\0\0")  # the last weight's bytes, sha256 off
    assert charnn.describe(tampered, verify=False)["vocab_size"] > 0
    assert charnn.copying(tampered, verify=False, samples=1, length=20)["checked"]["chars"] == 20
    assert charnn.inspect(tampered, verify=False, text="All:")["text"] == "All:"
    for call in (charnn.describe, charnn.copying):
        with pytest.raises(charnn.CharnnError, match="sha256"):
            call(tampered)
    for model, kind in ((None, "a NoneType"), (123, "an int")):
        for call in (charnn.describe, charnn.copying, lambda m: charnn.inspect(m, text="a")):
            with pytest.raises(charnn.CharnnError, match=f"a run or model folder .* got {kind}$"):
                call(model)


@pytest.mark.parametrize(
    ("record", "value"),
    [("init_from", {"path": "x", "val_loss": "low"}), ("init_from", {"path": "x", "added_chars": 5})],
)
def test_info_of_a_config_with_records_of_the_wrong_kind_is_one_line(trained_run, tmp_path, record, value):
    damaged = tmp_path / "damaged"
    shutil.copytree(trained_run, damaged)
    config = damaged / "model" / "config.json"
    info = json.loads(config.read_text())
    info["training"][record] = value
    config.write_text(json.dumps(info))
    result = run_cli("info", str(damaged))
    assert_clean_error(result, "config.json", "training.init_from")
    assert result.stdout == ""


@pytest.mark.parametrize(
    "inference", [{"val_loss": {"fp32": 1.5}, "val_chars": "many"}, {"val_loss": {"fp32": None}}]
)
def test_info_of_damaged_weight_checks_is_one_line(trained_run, tmp_path, inference):
    damaged = tmp_path / "damaged"
    shutil.copytree(trained_run, damaged)
    config = damaged / "model" / "config.json"
    info = json.loads(config.read_text())
    info["inference"] = inference
    config.write_text(json.dumps(info))
    assert_clean_error(run_cli("info", str(damaged)), "config.json", "'inference")
