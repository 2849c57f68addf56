"""The run folder: creating it safely, its fixed file names, and the metrics log."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

from charnn.errors import RunDirError
from charnn.fileio import atomic_write, read_bytes, write_error, write_json
from charnn.store.checkpoint import CHECKPOINTS_DIR, list_checkpoints
from charnn.store.model_dir import MODEL_DIR, REPLACED_DIR

ARGS_FILE = "train_args.json"
METRICS_FILE = "metrics.jsonl"
PLOT_FILE = "loss.png"
LOCK_FILE = ".lock"
_RUN_MARKERS = (ARGS_FILE, MODEL_DIR, CHECKPOINTS_DIR, METRICS_FILE)


class RunDir:
    """Paths inside one run folder and the writes that are not checkpoints."""

    def __init__(self, path: str | Path):
        self.path = Path(path).expanduser()
        self.model_dir = self.path / MODEL_DIR
        self.args_path = self.path / ARGS_FILE
        self.metrics_path = self.path / METRICS_FILE
        self.plot_path = self.path / PLOT_FILE
        self._lock_fd: int | None = None

    def holds_run(self) -> bool:
        """Whether the folder holds files of a charnn run (a model/ charnn did not write does not count)."""
        made = (self.args_path, self.metrics_path, self.model_dir / "config.json")
        return self.path.is_dir() and (any(p.exists() for p in made) or bool(self.checkpoints()))

    def checkpoints(self) -> list[Path]:
        return list_checkpoints(self.path)

    def replacing(self) -> bool:
        """Whether an overwritten run is set aside, to come back if this one ends without a checkpoint."""
        return (self.path / REPLACED_DIR).is_dir()

    def prepare(self, resume: bool, overwrite: bool) -> None:
        """Create and lock the folder; refuse to train over an existing run unless resuming or overwriting."""
        try:
            exists = self.path.exists()  # raises where the name cannot be a path here (too long, say)
        except OSError as e:
            raise RunDirError(f"{self.path}: cannot create the run folder ({e.strerror or e})") from None
        if exists and not self.path.is_dir():
            raise RunDirError(f"{self.path}: exists and is not a folder")
        if self.path.is_symlink() and not self.path.exists():
            target = os.readlink(self.path)
            raise RunDirError(f"{self.path}: a symbolic link to {target}, which does not exist")
        if resume and not self.args_path.exists():
            raise RunDirError(f"{self.path}: no run to resume here (no {ARGS_FILE}); drop --resume")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise RunDirError(f"{self.path}: cannot create the run folder ({e.strerror or e})") from None
        if not os.access(self.path, os.W_OK | os.X_OK):
            raise RunDirError(f"{self.path}: the run folder is not writable")
        self.lock()
        self.settle_replaced()
        if resume:
            self.recover()
            if not self.checkpoints():
                raise RunDirError(
                    f"{self.path}: no complete checkpoint to resume from; start it again with --overwrite"
                )
            return
        if not self.holds_run():
            foreign = [m for m in (MODEL_DIR, CHECKPOINTS_DIR) if (self.path / m).exists()]
            if foreign:
                raise RunDirError(
                    f"{self.path}: holds {foreign[0]}/, which charnn did not write; pick another --out"
                )
        elif not overwrite:
            raise RunDirError(
                f"{self.path}: already holds a run; pass --resume to continue it or --overwrite to replace it"
            )
        else:  # set aside, not deleted: a new run that fails before its first checkpoint puts it back
            replaced = self.path / REPLACED_DIR
            replaced.mkdir()
            for marker in (*_RUN_MARKERS, PLOT_FILE):
                if (self.path / marker).exists():
                    os.replace(self.path / marker, replaced / marker)

    def settle_replaced(self) -> None:
        """An overwritten run set aside: deleted once the new run has a checkpoint, else put back."""
        replaced = self.path / REPLACED_DIR
        if not replaced.is_dir():
            return
        if not self.checkpoints():
            for marker in (*_RUN_MARKERS, PLOT_FILE):
                target = self.path / marker
                if target.is_dir():
                    shutil.rmtree(target)
                else:
                    target.unlink(missing_ok=True)
                if (replaced / marker).exists():
                    os.replace(replaced / marker, target)
        shutil.rmtree(replaced, ignore_errors=True)

    @property
    def locked(self) -> bool:
        """Whether this process holds the run's lock (and so may tidy the folder)."""
        return self._lock_fd is not None

    def lock(self) -> None:
        """Take the run's lock (held until unlock() or the process ends, even by SIGKILL)."""
        if fcntl is None:  # no flock on this platform: runs are not protected from each other
            return
        fd = os.open(self.path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise RunDirError(
                f"{self.path}: another charnn training (pid {holder}) is writing this run; "
                "wait for it to finish or stop it"
            ) from None
        try:  # the holder's pid, for the message of a second training started into this run
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        except OSError as e:
            os.close(fd)
            raise write_error(self.path / LOCK_FILE, e) from None
        self._lock_fd = fd

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def recover(self) -> None:
        """Tidy up after a crash: put back a model folder caught mid-swap, drop half-written temp files."""
        for folder in (self.path, self.path / CHECKPOINTS_DIR):
            if not folder.is_dir():
                continue
            for stale in sorted(folder.glob(".*.old-*")):
                final = folder / stale.name[1:].rsplit(".old-", 1)[0]
                if not final.exists():
                    os.replace(stale, final)
                else:
                    shutil.rmtree(stale, ignore_errors=True)
            for stale in folder.glob(".*.tmp-*"):
                if stale.is_dir():
                    shutil.rmtree(stale, ignore_errors=True)
                else:
                    stale.unlink(missing_ok=True)

    def read_args(self) -> dict:
        """The settings the run was started with (train_args.json), to resume it."""
        path = self.args_path
        replaced = self.path / REPLACED_DIR / ARGS_FILE
        if replaced.exists() and not self.checkpoints():  # an --overwrite stopped before a checkpoint:
            path = replaced  # the run it replaced comes back (prepare) and resumes with its own settings
        if not path.exists():
            raise RunDirError(f"{self.path}: no run to resume here (no {ARGS_FILE}); drop --resume")
        try:
            return json.loads(read_bytes(path).decode("utf-8"))
        except ValueError as e:  # UnicodeDecodeError is a ValueError
            raise self.args_damaged(e) from None

    def args_damaged(self, cause: Exception) -> RunDirError:
        """The error for a train_args.json that cannot give the run's settings back."""
        return RunDirError(
            f"{self.args_path}: damaged ({type(cause).__name__}: {cause}); it records the run's settings, "
            "so the run cannot be resumed without it as saved"
        )

    def write_args(self, args: dict) -> None:
        write_json(self.args_path, args)

    def append_metrics(self, record: dict) -> None:
        """Add one JSON line to metrics.jsonl; where it cannot be written whole (a full disk), none of it."""
        line = memoryview((json.dumps(record) + "\n").encode("utf-8"))
        try:
            with open(self.metrics_path, "ab", buffering=0) as f:  # unbuffered: what failed is known
                size = os.fstat(f.fileno()).st_size
                try:
                    while line:
                        line = line[f.write(line) :]
                except OSError:
                    f.truncate(size)  # no torn line left behind
                    raise
        except OSError as e:
            raise write_error(self.metrics_path, e) from None

    def truncate_metrics(self, last_step: int) -> None:
        """Drop metric lines after `last_step` (work lost since the checkpoint a run resumes from), and any
        line torn by a crash or a full disk."""
        kept = [r for r in self.read_metrics() if r.get("step", 0) <= last_step]
        if kept or self.metrics_path.exists():
            atomic_write(self.metrics_path, "".join(json.dumps(r) + "\n" for r in kept).encode("utf-8"))

    def read_metrics(self) -> list[dict]:
        """The lines of metrics.jsonl, less any that a crash or a full disk left torn."""
        if not self.metrics_path.exists():
            return []
        return [r for r in map(_record, self.metrics_path.read_text(encoding="utf-8").splitlines()) if r]


def _record(line: str) -> dict | None:
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) and isinstance(record.get("step", 0), int) else None
