"""A fork server for the tests' runs of `python -m charnn ARGS` (conftest.run_cli): a Python process that has
imported torch and charnn's heavy modules once forks a child for each command, so that a command costs a
fork instead of an interpreter's start and `import torch` (1 to 3 s of CPU, hundreds of times a run).

The child becomes what `python -m charnn ARGS` would have been: the test's stdin, stdout and stderr on fds
0, 1 and 2 (passed over the socket), its working folder and environment, sys.argv as under -m, and sys.std*
as PYTHONIOENCODING=utf-8 and PYTHONUNBUFFERED=1 make them; what the imports printed (warnings, say) is
printed again. It then runs charnn at the top level of this script, so that SystemExit, atexit, thread
shutdown, the last flush and an uncaught traceback end it as they end a fresh interpreter. The server
waits for it and sends its status as subprocess gives it (negative: killed by that signal).

The server runs no torch operation, only imports: a forked child of a process whose OpenMP threads have
started hangs in its first parallel operation. What the children share that fresh interpreters would each
draw anew: NumPy's global generator (charnn seeds it before use: training/rng.py) and the seed of str
hashes (set orders).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import select
import selectors
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence

# What `python -m charnn` imports for its commands (train, generate, evaluate, info, copying, inspect,
# export), a second or more of each start; serve's web stack is left to the few commands that need it.
# matplotlib (train's loss.png, 0.5 s a run) reads its settings as it is imported: this server's
# environment and working folder then, which no test changes for a command.
PRELOAD = (
    "torch",
    "numpy",
    "safetensors.torch",
    "charnn.cli",
    "charnn.api",
    "charnn.training.run",
    "charnn.store.model_dir",
    "charnn.sampling",
    "charnn.evaluation",
    "charnn.copy_report",
    "charnn.inspection.page",
    "charnn.export.folder",
    "charnn.server",
    "matplotlib",
    "matplotlib.figure",
)
HEADER = struct.Struct("!I")  # each message: its length, the fds it carries, then its JSON


def send(sock: socket.socket, message: dict, fds: Sequence[int] = ()) -> None:
    """`message` as JSON, with `fds` (which the other end receives as fds of its own)."""
    data = json.dumps(message).encode()
    socket.send_fds(sock, [HEADER.pack(len(data))], list(fds))
    sock.sendall(data)


def receive(sock: socket.socket) -> tuple[dict | None, list[int]]:
    """The next message and the fds it carries; (None, []) once the other end has closed."""
    head, fds, _, _ = socket.recv_fds(sock, HEADER.size, 3)
    head += _exactly(sock, HEADER.size - len(head)) if head else b""
    if not head:
        return None, fds
    return json.loads(_exactly(sock, HEADER.unpack(head)[0])), fds


def _exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("the charnn fork server's socket closed mid-message")
        data += chunk
    return data


class ForkServer:
    """The test process's end: starts the server on the first run (and again should it die), runs commands
    one at a time, and stops it when the tests end."""

    def __init__(self, env: dict[str, str]):
        self.env = env  # the server's own, as the test process had it before any test changed it
        self.lock = threading.Lock()
        self.proc: subprocess.Popen | None = None
        self.sock: socket.socket | None = None
        self.said: tuple = ()  # the files the server's stdout and stderr go to

    def run(
        self, args: list[str], cwd: str | os.PathLike | None, timeout: float, stdin: str | None, env: dict
    ) -> subprocess.CompletedProcess:
        """What `subprocess.run([python, "-m", "charnn", *args], capture_output=True, text=True,
        encoding="utf-8", cwd=cwd, timeout=timeout, env=env, input=stdin)` returns, or raises."""
        cmd = [sys.executable, "-m", "charnn", *args]
        with self.lock:
            if self.proc is None or self.proc.poll() is not None:
                self._start()
            deadline = time.monotonic() + timeout
            out_r, out_w = os.pipe()
            err_r, err_w = os.pipe()
            in_r, in_w = os.pipe() if stdin is not None else (_inherited_stdin(), None)
            request = {"args": list(args), "cwd": os.path.abspath(cwd or os.getcwd()), "env": env}
            request["cpus"] = sorted(os.sched_getaffinity(0))  # this thread's, as a subprocess inherits
            request["stdin"] = in_r is not None
            try:
                send(self.sock, request, [fd for fd in (in_r, out_w, err_w) if fd is not None])
                pidfd = self._reply(deadline)  # its pidfd, once forked
            except BaseException as e:
                for fd in (out_r, err_r, *([in_w] if in_w is not None else [])):
                    os.close(fd)
                self.close()  # it did not fork in time, or died: the next command starts another
                if isinstance(e, subprocess.TimeoutExpired):
                    raise subprocess.TimeoutExpired(cmd, timeout) from None
                raise
            finally:  # the child's ends are the child's alone now: its exit ends our reads
                for fd in (out_w, err_w, *([in_r] if in_w is not None else [])):
                    os.close(fd)
            try:
                out, err = _communicate(in_w, (stdin or "").encode("utf-8"), out_r, err_r, deadline)
                status = self._reply(deadline)
            except subprocess.TimeoutExpired as e:
                _kill(pidfd)
                self._reply(None)
                raise subprocess.TimeoutExpired(cmd, timeout, e.output, e.stderr) from None
            except BaseException:
                _kill(pidfd)
                self.close()  # mid-command: what the socket says next is unknown
                raise
            finally:
                os.close(pidfd)
        return subprocess.CompletedProcess(cmd, status, _text(out), _text(err))

    def _start(self) -> None:
        self.close()  # a server that died
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.said = (tempfile.TemporaryFile(), tempfile.TemporaryFile())  # noqa: SIM115 (closed by close)
        with theirs:
            self.proc = subprocess.Popen(
                [sys.executable, os.path.abspath(__file__), str(theirs.fileno())],
                pass_fds=[theirs.fileno()],
                stdin=subprocess.DEVNULL,
                stdout=self.said[0],
                stderr=self.said[1],
                env=self.env,
            )
        self.sock = ours
        if receive(ours)[0] is None:
            raise RuntimeError(f"the charnn fork server did not start:\n{self.close()}")

    def _reply(self, deadline: float | None) -> int:
        """The server's next answer: the child's pidfd once forked, then its exit status once ended."""
        self.sock.settimeout(None if deadline is None else max(deadline - time.monotonic(), 0.001))
        try:
            reply, fds = receive(self.sock)
        except TimeoutError:
            raise subprocess.TimeoutExpired([], 0) from None  # with no output: it had ended, or not begun
        except OSError:
            reply = None
        finally:
            self.sock.settimeout(None)
        if reply is None:
            raise RuntimeError(f"the charnn fork server died:\n{self.close()}")
        return fds[0] if fds else reply["returncode"]

    def close(self) -> str:
        """Stop the server (it ends when its socket closes); what it wrote on stderr."""
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        if self.proc is None:
            return ""
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None
        out, err = self.said
        with out, err:
            err.seek(0)
            return err.read().decode(errors="replace")


def _inherited_stdin() -> int | None:
    """The test process's fd 0, which a subprocess would inherit (None where it is closed)."""
    try:
        os.fstat(0)
    except OSError:
        return None
    return 0


def _communicate(
    in_fd: int | None, data: bytes, out_fd: int, err_fd: int, deadline: float
) -> tuple[bytes, bytes]:
    """Write `data` to in_fd and read out_fd and err_fd to their ends, as Popen.communicate does; closes
    them all, and raises TimeoutExpired (with the output so far) at `deadline`."""
    chunks: dict[int, list[bytes]] = {out_fd: [], err_fd: []}
    with selectors.DefaultSelector() as selector:
        for fd in chunks:
            selector.register(fd, selectors.EVENT_READ)
        if in_fd is not None:
            selector.register(in_fd, selectors.EVENT_WRITE)
        written = 0
        try:
            while selector.get_map():
                left = deadline - time.monotonic()
                if left <= 0:
                    out, err = (b"".join(chunks[fd]) for fd in (out_fd, err_fd))
                    raise subprocess.TimeoutExpired([], 0, out, err)
                for key, _ in selector.select(left):
                    if key.fd == in_fd:
                        try:  # PIPE_BUF bytes at a time: a pipe said writable takes them without blocking
                            written += os.write(in_fd, data[written : written + select.PIPE_BUF])
                        except BrokenPipeError:
                            written = len(data)
                        if written >= len(data):
                            selector.unregister(in_fd)
                            os.close(in_fd)
                    elif chunk := os.read(key.fd, 65536):
                        chunks[key.fd].append(chunk)
                    else:
                        selector.unregister(key.fd)
                        os.close(key.fd)
        finally:
            for key in list(selector.get_map().values()):
                os.close(key.fd)
    return b"".join(chunks[out_fd]), b"".join(chunks[err_fd])


def _text(data: bytes) -> str:
    """Output as subprocess's text mode reads it: strict utf-8, universal newlines."""
    return data.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")


def _kill(pidfd: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # it has ended already
        signal.pidfd_send_signal(pidfd, signal.SIGKILL)


def _stdio(fd: int, model):
    """sys.stdin, stdout or stderr on `fd` as the interpreter makes it at start-up (create_stdio in
    pylifecycle.c) under PYTHONUNBUFFERED: unbuffered but for stdin, write-through, with the encoding and
    error handler it gave `model` (this server runs under PYTHONIOENCODING=utf-8 too); None where fd is
    closed."""
    try:
        os.fstat(fd)
    except OSError:
        return None
    write = fd != 0
    buffer = open(fd, "wb" if write else "rb", buffering=0 if write else -1, closefd=False)  # noqa: SIM115
    (buffer if write else buffer.raw).name = ("<stdin>", "<stdout>", "<stderr>")[fd]
    stream = io.TextIOWrapper(buffer, model.encoding, model.errors, "\n", False, True)
    stream.mode = "w" if write else "r"
    return stream


def _become(request: dict, fds: list[int], said: tuple[bytes, bytes]) -> None:
    """Turn this forked child into `python -m charnn ARGS` as started for `request`, up to running charnn;
    `said`: what the server's imports wrote on stdout and stderr, which charnn's would write again."""
    targets = (0, 1, 2) if request["stdin"] else (1, 2)
    for target, fd in zip(targets, fds, strict=True):
        os.dup2(fd, target)
        os.close(fd)
    if not request["stdin"]:
        os.close(0)
    os.chdir(request["cwd"])
    os.sched_setaffinity(0, request["cpus"])
    os.environ.clear()
    os.environ.update(request["env"])
    sys.argv = ["-m", *request["args"]]  # runpy puts __main__.py's path first, as -m does
    sys.path[0] = os.getcwd()  # -m's first entry: the working folder
    models = (sys.__stdin__, sys.__stdout__, sys.__stderr__)
    sys.stdin, sys.stdout, sys.stderr = (_stdio(fd, model) for fd, model in enumerate(models))
    sys.__stdin__, sys.__stdout__, sys.__stderr__ = sys.stdin, sys.stdout, sys.stderr
    for fd, data in zip((1, 2), said, strict=True):
        os.write(fd, data)


if __name__ == "__main__":
    import gc
    import importlib
    import runpy

    sys.path[0] = os.getcwd()  # as under -m: not this folder of test modules
    for name in PRELOAD:
        importlib.import_module(name)
    said = tuple(os.pread(fd, os.fstat(fd).st_size, 0) for fd in (1, 2))  # warnings, say: none as yet
    gc.freeze()  # the children's collections and exits then leave these objects' pages shared: 4x less CPU
    server = socket.socket(fileno=int(sys.argv[1]))
    send(server, {"ready": True})
    while True:
        request, fds = receive(server)
        if request is None:  # the tests are done
            sys.exit(0)
        pid = os.fork()
        if pid == 0:
            break
        for fd in fds:
            os.close(fd)
        pidfd = os.pidfd_open(pid)
        send(server, {"pid": pid}, [pidfd])
        os.close(pidfd)
        send(server, {"returncode": os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])})
    server.close()
    _become(request, fds, said)
    runpy.run_module("charnn", run_name="__main__", alter_sys=True)
