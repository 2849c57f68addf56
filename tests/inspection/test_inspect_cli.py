"""`charnn inspect` end to end: a self-contained page, the JSON, and each bad input as one clear line."""

import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import torch
from safetensors.torch import load_file, save_file

import charnn
from charnn.api import load
from charnn.config import MAX_INSPECT_CHARS
from charnn.inspection.page import render_html
from charnn.inspection.trace import trace
from conftest import assert_clean_error, run_cli, snapshot

TEXT = "First Citizen:\nSpeak, speak.\n"


def test_the_page_is_one_file_that_needs_no_network(trained_run, tmp_path):
    out = tmp_path / "page.html"
    result = run_cli("inspect", str(trained_run), "--text", TEXT, "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "wrote" in result.stderr and "mean surprisal" in result.stderr
    page = out.read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)  # nothing fetched from elsewhere
    assert "charnnInspect.render" in page and "inside quotes" not in page.split("<script>")[0]
    data = json.loads(page.rsplit('document.getElementById("inspect-view"), ', 1)[1].rsplit(");", 1)[0])
    assert data["text"] == TEXT


def test_json_matches_the_python_computation(trained_run, tmp_path):
    (tmp_path / "t.txt").write_text(TEXT, encoding="utf-8")
    result = run_cli("inspect", str(trained_run), "--file", str(tmp_path / "t.txt"), "--json", "--units", "3")
    data = json.loads(result.stdout)
    loaded = load(trained_run)
    t = trace(loaded.model, loaded.vocab, TEXT)
    np.testing.assert_allclose(data["surprisal"], t.surprisal, atol=1e-3)
    assert [c for c, _ in data["guesses"][5]] == [c for c, _ in t.guesses[5]]
    (layer,) = data["layers"]
    assert len(layer["units"]) == 3
    first = layer["units"][0]
    np.testing.assert_allclose(first["values"], t.layers[0][:, first["unit"]], atol=1e-3)
    assert set(layer["features"]) >= {"position in line", "upper case", "speaker line"}


def test_bad_inputs_are_one_clear_line(trained_run, tmp_path):
    run = str(trained_run)
    assert_clean_error(run_cli("inspect", run, "--text", ""), "empty")
    assert_clean_error(run_cli("inspect", run, "--text", "Speak€~"), "never saw", "'€'", "'~'")
    assert_clean_error(run_cli("inspect", run), "--text TEXT or --file FILE")
    long = "a" * (MAX_INSPECT_CHARS + 1)
    assert_clean_error(run_cli("inspect", run, "--file", "-", stdin=long), f"at most {MAX_INSPECT_CHARS:,}")
    assert_clean_error(run_cli("inspect", run, "--file", str(tmp_path / "none.txt")), "none.txt")
    blocked = tmp_path / "file"
    blocked.write_text("x")
    assert_clean_error(
        run_cli("inspect", run, "--text", "All:", "--out", str(blocked / "p.html")), "cannot write"
    )
    for folder, says in (
        ("", "--out is empty"),
        (".", "a folder, not a file"),
        ("/", "--out names a folder"),
    ):
        result = run_cli("inspect", run, "--text", "All:", "--out", folder, cwd=tmp_path)
        assert_clean_error(result, says)


def test_a_byte_order_mark_at_the_start_of_a_file_is_dropped(trained_run, tmp_path):
    (tmp_path / "bom.txt").write_bytes(b"\xef\xbb\xbf" + TEXT.encode("utf-8"))
    result = run_cli("inspect", str(trained_run), "--file", str(tmp_path / "bom.txt"), "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["text"] == TEXT


def test_text_that_looks_like_markup_stays_data_in_the_page():
    # "<!--" then "<script" would keep the real "</script>" from closing the data's script element
    text = '<!-- old\n<script src="a.js">x</script> & -->\u2028\u2029'
    page = render_html({"model": "GRU 1x8", "text": text})
    script = page.rsplit("<script>", 1)[1].split("</script>", 1)[0]
    assert not set("<>&\u2028\u2029") & set(script)
    data = json.loads(script.split('document.getElementById("inspect-view"), ', 1)[1].rsplit(");", 1)[0])
    assert data["text"] == text


def test_out_never_replaces_the_models_files_or_the_text_read(trained_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    before = snapshot(run)
    (tmp_path / "t.txt").write_text(TEXT)
    for out in ("run/model/config.json", "run/train_args.json", "run/model/new.html", "t.txt"):
        flags = ["--file", "t.txt"] if out == "t.txt" else ["--text", TEXT]
        result = run_cli("inspect", str(run), *flags, "--out", out, cwd=tmp_path)
        assert_clean_error(result, out, "elsewhere")
    assert snapshot(run) == before and (tmp_path / "t.txt").read_text() == TEXT
    page = run_cli("inspect", str(run / "model"), "--text", TEXT, "--out", "page.html", cwd=tmp_path)
    assert page.returncode == 0, page.stderr


def test_out_paths_as_a_user_means_them(trained_run, tmp_path):
    folder = run_cli("inspect", str(trained_run), "--text", TEXT, "--out", "newdir/", cwd=tmp_path)
    assert_clean_error(folder, "newdir/: --out names a folder")
    assert not (tmp_path / "newdir").exists()
    both = run_cli("inspect", str(trained_run), "--text", TEXT, "--json", "--out", "p.html", cwd=tmp_path)
    assert both.returncode == 0 and json.loads(both.stdout)["text"] == TEXT  # the JSON, and the page too
    assert "charnnInspect.render" in (tmp_path / "p.html").read_text()
    closed = subprocess.run(
        [sys.executable, "-m", "charnn", "inspect", str(trained_run), "--text", TEXT, "--out", "q.html"],
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: os.close(1),
    )
    assert closed.returncode == 0 and (tmp_path / "q.html").exists(), closed.stderr  # stdout is not used
    (tmp_path / "poem.txt").write_text("my poem\n")  # --out where --file was meant: the poem is kept
    slip = run_cli("inspect", str(trained_run), "--text", TEXT, "--out", "poem.txt", cwd=tmp_path)
    assert_clean_error(slip, "poem.txt: exists and is not a page charnn inspect wrote")
    assert (tmp_path / "poem.txt").read_text() == "my poem\n"
    again = run_cli("inspect", str(trained_run), "--text", "All:", "--out", "p.html", cwd=tmp_path)
    assert again.returncode == 0 and '"text": "All:"' in (tmp_path / "p.html").read_text()  # a page: replaced
    os.mkfifo(tmp_path / "pipe")  # as /dev/null would be: the page renamed over it would replace it
    assert_clean_error(
        run_cli("inspect", str(trained_run), "--text", TEXT, "--out", "pipe", cwd=tmp_path),
        "not a regular file",
    )
    assert (tmp_path / "pipe").is_fifo()
    (tmp_path / "pages").mkdir()
    (tmp_path / "latest.html").symlink_to("pages/today.html")  # dangling until the page is written
    for _ in range(2):
        linked = run_cli("inspect", str(trained_run), "--text", TEXT, "--out", "latest.html", cwd=tmp_path)
        assert linked.returncode == 0, linked.stderr
        assert (tmp_path / "latest.html").is_symlink(), "the link was replaced by the page"
        assert "charnnInspect.render" in (tmp_path / "pages/today.html").read_text()


def test_text_is_read_as_the_training_text_was_and_never_whole_past_the_limit(trained_run, tmp_path):
    crlf = run_cli("inspect", str(trained_run), "--text", TEXT.replace("\n", "\r\n"), "--json")
    assert crlf.returncode == 0 and json.loads(crlf.stdout)["text"] == TEXT, crlf.stderr
    endless = run_cli("inspect", str(trained_run), "--file", "/dev/zero", "--json", timeout=60)
    assert_clean_error(endless, "/dev/zero: holds over 20,000 chars")


def test_units_asked_for_are_shown_as_far_as_the_layer_has_them(trained_run):
    data = charnn.inspect(trained_run, text=TEXT * 4, units=20)
    assert all(len(layer["units"]) == 20 for layer in data["layers"])  # 32 units a layer
    assert all(len(best) <= 3 for layer in data["layers"] for best in layer["features"].values())


def test_a_model_whose_weights_are_not_finite_is_refused(trained_run, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(trained_run, broken)
    weights = broken / "model" / "model.safetensors"
    tensors = load_file(str(weights))
    tensors["head.weight"] = torch.full_like(tensors["head.weight"], float("nan"))
    save_file(tensors, str(weights))
    result = run_cli("inspect", str(broken), "--no-verify", "--text", TEXT, "--json")
    assert_clean_error(result, "not finite numbers")
    assert result.stdout == ""
