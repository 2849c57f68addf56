"""`charnn serve`: the web playground and HTTP API (needs the optional extra: pip install 'charnn[serve]')."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from charnn.config import ServeConfig
from charnn.declare import build
from charnn.errors import CharnnError

if TYPE_CHECKING:
    from charnn.store.model_dir import LoadedModel


def serve(model: str | Path | LoadedModel, config: ServeConfig | None = None, **settings: object) -> None:
    """Load `model` once (or take it loaded) and serve the page and API until interrupted; `config`, or
    ServeConfig's settings as keywords (host, port, max_streams, ...)."""
    config = config or build(ServeConfig, settings)
    try:
        import uvicorn

        from charnn.server.app import create_app
    except ImportError as e:
        raise CharnnError(
            f"charnn serve needs FastAPI and uvicorn ({e.name} is missing); install them with: "
            "pip install 'charnn[serve]'"
        ) from None
    import torch

    from charnn.api import load, weights_for
    from charnn.store.model_dir import LoadedModel

    host, port = config.host, config.port
    listener = _listen(host, port)
    loaded = model if isinstance(model, LoadedModel) else load(model)
    weights_for(loaded, config.weights, 1)  # a weight format this CPU cannot run is refused before serving
    # One engine thread runs every batched step; the event loop (HTTP, JSON) needs a core of its own.
    torch.set_num_threads(max(1, (os.cpu_count() or 1) - 1))
    app = create_app(loaded, config)
    print(
        f"charnn: serving {loaded.path} at {url(host, port)}/ (API docs at /docs); Ctrl-C stops",
        file=sys.stderr,
    )
    settings = uvicorn.Config(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=10)
    _server_class()(settings).run(sockets=[listener])


def _server_class() -> type:
    import uvicorn

    class EndingStreams(uvicorn.Server):
        """uvicorn's server, which on SIGTERM or Ctrl-C first ends every live stream with a final event."""

        def handle_exit(self, sig: int, frame: object) -> None:
            # Not here: a signal handler runs between two bytecodes of the event loop, which may hold a
            # lock that ending the streams takes (streams.Wakeups); the loop runs it next.
            engine = self.config.app.state.engine
            try:
                asyncio.get_running_loop().call_soon_threadsafe(engine.shutdown, "server shutting down")
            except RuntimeError:  # no loop running in this thread
                engine.shutdown("server shutting down")
            super().handle_exit(sig, frame)

    return EndingStreams


# Each connection's kernel send buffer (accepted sockets inherit it): without a bound, Linux lets megabytes
# pile up for a client that stopped reading before the server notices; 64 KiB is minutes of text.
SEND_BUFFER = 64 * 1024


def _listen(host: str, port: int) -> socket.socket:
    """A listening socket on host:port, or one line saying why not (rather than uvicorn's log)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as e:
        raise CharnnError(f"--host {host}: cannot resolve it ({e.strerror or e})") from None
    family, kind, proto, _, address = infos[0]
    listener = socket.socket(family, kind, proto)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
    try:
        listener.bind(address)
        listener.listen(2048)
    except OSError as e:
        listener.close()
        raise CharnnError(f"cannot listen on {host}:{port} ({e.strerror or e})") from None
    return listener


def url(host: str, port: int) -> str:
    """The server's address as a URL: an IPv6 host in brackets."""
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def background(
    model: str | Path, *flags: str, startup_s: float = 60.0
) -> Iterator[tuple[str, subprocess.Popen]]:
    """Run `charnn serve MODEL FLAGS` in a subprocess on a free port of 127.0.0.1 until the block ends.

    Yields the base URL (once /healthz answers) and the process; for tests, benchmarks and scripts.
    """
    port = free_port()
    cmd = [sys.executable, "-u", "-m", "charnn", "serve", str(model), "--port", str(port), *flags]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + startup_s
        while True:
            try:
                with urllib.request.urlopen(base + "/healthz", timeout=1) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise CharnnError(
                        f"charnn serve did not start: {proc.stderr.read() if proc.stderr else ''}"
                    ) from None
                time.sleep(0.1)
        yield base, proc
    finally:
        proc.terminate()
        proc.wait(timeout=20)
