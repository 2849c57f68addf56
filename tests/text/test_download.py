"""`--data URL` against a real HTTP server on 127.0.0.1."""

import functools
import http.server
import json
import threading
from pathlib import Path

import pytest

from charnn.errors import DataError
from charnn.text.corpus import load_corpus
from charnn.text.download import download_path, fetch
from conftest import assert_clean_error, run_cli


class ShortHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files, except /short.txt, which promises 10,000 bytes and sends 10 before hanging up."""

    def do_GET(self):
        if self.path == "/short.txt":
            self.send_response(200)
            self.send_header("Content-Length", "10000")
            self.end_headers()
            self.wfile.write(b"0123456789")
            self.wfile.flush()
            self.close_connection = True
            return
        super().do_GET()

    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(ShortHandler, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}", httpd
    httpd.shutdown()
    httpd.server_close()


def test_download_once_then_reuse_without_the_server(server):
    root, base, httpd = server
    (root / "poems.txt").write_text("roses are red\n" * 100)
    url = f"{base}/poems.txt"
    path = fetch(url, quiet=True)
    assert path.read_text() == "roses are red\n" * 100
    httpd.shutdown()  # a second load must not need the network
    corpus = load_corpus(url)
    assert corpus.source == url and len(corpus) == 1400


def test_missing_page_is_a_clear_error_and_leaves_nothing(server):
    _, base, _ = server
    url = f"{base}/nope.txt"
    with pytest.raises(DataError, match="download failed"):
        fetch(url, quiet=True)
    assert not download_path(url).exists()


def test_partial_download_is_discarded(server):
    _, base, _ = server
    url = f"{base}/short.txt"
    with pytest.raises(DataError, match="download failed"):
        fetch(url, quiet=True)
    folder = download_path(url).parent
    assert not [p for p in folder.iterdir() if "short" in p.name]


def test_train_from_a_url_on_the_command_line(server, tmp_path):
    root, base, _ = server
    (root / "corpus.txt").write_text("Speak, speak.\nYou are all resolved.\n" * 300)
    result = run_cli(
        "train",
        "--data",
        f"{base}/corpus.txt",
        "--out",
        str(tmp_path / "run"),
        "--max-steps",
        "3",
        "--hidden",
        "16",
        "--embedding",
        "8",
        "--seq-len",
        "16",
        "--batch-size",
        "4",
        "--quiet",
    )
    assert result.returncode == 0, result.stderr
    assert "download" not in result.stderr  # --quiet: no bar for the download either
    assert_clean_error(
        run_cli("train", "--data", f"{base}/gone.txt", "--out", str(tmp_path / "r2")),
        "gone.txt",
        "download failed",
    )
    assert not Path(tmp_path / "r2").exists()


@pytest.mark.parametrize(
    "damage", ['{"url": "http://127.0.0.1/sm', "null", "[]", '"text"', "{}", '{"size": "14"}']
)
def test_damaged_download_metadata_means_downloading_again(server, damage):
    root, base, _ = server
    url = f"{base}/poems.txt"
    (root / "poems.txt").write_text("roses are red\n" * 10)
    path = fetch(url, quiet=True)
    meta = path.with_name(path.name + ".json")
    meta.write_text(damage)
    (root / "poems.txt").write_text("violets are blue\n" * 10)  # only a new download can see this
    assert fetch(url, quiet=True).read_text() == "violets are blue\n" * 10
    assert json.loads(meta.read_text())["size"] == 170  # written whole again
    (root / "poems.txt").unlink()
    assert load_corpus(url).source == url  # and kept: reused without the server's file
