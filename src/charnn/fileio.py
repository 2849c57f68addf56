"""Durable file writes (a crash leaves the old file or the new one, never a torn mix) and JSON reads."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from charnn.config import env_path
from charnn.errors import ModelFileError, RunDirError


def cache_root() -> Path:
    """Where charnn keeps encoded corpora, downloads, kernel checks and compiled code: $CHARNN_CACHE_DIR,
    else the user cache folder."""
    chosen = env_path("CHARNN_CACHE_DIR")
    if chosen is not None:
        return chosen
    import platformdirs

    return Path(platformdirs.user_cache_dir("charnn"))


def write_error(path: Path, e: OSError) -> RunDirError:
    why = e.strerror or e
    with contextlib.suppress(OSError, RuntimeError):  # RuntimeError: a symlink loop
        if path.resolve().is_relative_to(cache_root().resolve()):
            advice = "set CHARNN_CACHE_DIR to a writable folder"
            return RunDirError(f"{path}: cannot write ({why}); it is charnn's cache: {advice}")
    return RunDirError(f"{path}: cannot write ({why}); files saved before are untouched")


def read_error(path: Path, e: OSError) -> ModelFileError:
    """A model's or run's file that cannot be read, as one line: missing, or why."""
    if isinstance(e, FileNotFoundError):
        return ModelFileError(f"{path}: missing")
    return ModelFileError(f"{path}: cannot be read ({e.strerror or e})")


def fsync_dir(path: Path) -> None:
    """Make a rename inside `path` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _beside(path: Path, tag: str) -> Path:
    """The hidden name of `path`'s temporary or replaced copy, `.NAME.TAG-PID`, its NAME cut short where the
    whole would pass the 255 bytes a file name may take (so any name that may be written may be replaced)."""
    suffix = f".{tag}-{os.getpid()}"
    name = path.name
    while len(os.fsencode(f".{name}{suffix}")) > 255:
        name = name[:-1]
    return path.with_name(f".{name}{suffix}")


def moved_aside(final: Path) -> list[Path]:
    """The copies of folder `final` that write_folder moved aside (`.NAME.old-PID`), oldest name first: they
    live through a swap, or after a crash between its two renames."""
    return sorted(final.parent.glob(f".{final.name}.old-*"))


def atomic_write(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that a crash leaves either the old file or the new one, never a mix."""
    atomic_stream(path, [data])


def atomic_stream(path: Path, chunks: Iterable[bytes]) -> None:
    """atomic_write for data produced piece by piece (never all in memory at once)."""
    if not path.name:  # "", "." or "/": no file can be put there
        raise RunDirError(f"{path}: a folder, not a file to write")
    if path.exists() and not (path.is_file() or path.is_dir()):  # renamed over, /dev/null would be a file
        raise RunDirError(f"{path}: not a regular file (a device or a pipe); nothing was written")
    tmp = _beside(path, "tmp")
    try:
        with open(tmp, "wb") as f:
            for chunk in chunks:
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException as e:  # a failed write, or Ctrl-C or an error in `chunks`: no temp file left behind
        with contextlib.suppress(OSError):  # e.g. the folder is a file: there is no temp file to remove
            tmp.unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise write_error(path, e) from None
        raise


def write_json(path: Path, obj: object) -> None:
    atomic_write(path, (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))


def write_folder(final: Path, files: dict[str, bytes]) -> None:
    """Create folder `final` holding `files`, replacing any old one only once the new one is complete."""
    tmp, old = _beside(final, "tmp"), _beside(final, "old")
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for name, data in files.items():
            with open(tmp / name, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        fsync_dir(tmp)
        if final.exists():
            os.replace(final, old)
        os.replace(tmp, final)
        fsync_dir(final.parent)
    except BaseException as e:  # a failed write, or a stop (export turns SIGTERM into SystemExit): undone
        shutil.rmtree(tmp, ignore_errors=True)
        if old.exists() and not final.exists():
            os.replace(old, final)
        if isinstance(e, OSError):
            raise write_error(final, e) from None
        raise
    if old.is_symlink():  # a link given as the folder: the link is replaced, what it pointed at stays
        old.unlink()
    else:
        shutil.rmtree(old, ignore_errors=True)


def cached_sidecar(meta_path: Path, data_path: Path) -> tuple[dict, int] | None:
    """A cache entry's JSON sidecar (an object) and the size of the data file it describes, or None where
    either is missing or damaged in any way: the caller rebuilds the entry."""
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        size = data_path.stat().st_size
    except (OSError, ValueError):  # UnicodeDecodeError is a ValueError
        return None
    return (meta, size) if isinstance(meta, dict) else None


def read_bytes(path: Path) -> bytes:
    """The bytes of a model's or run's file, or ModelFileError naming it: missing, or why it is unreadable."""
    try:
        return path.read_bytes()
    except OSError as e:
        raise read_error(path, e) from None


def read_json(path: Path) -> dict:
    """Parse a JSON object from `path`, raising ModelFileError naming the file when it cannot."""
    return parse_json(path, read_bytes(path))


def parse_json(path: Path, text: bytes) -> dict:
    """The JSON object in `text` (read from `path`), or ModelFileError naming the file."""
    try:
        data = json.loads(text.decode("utf-8"))
    except ValueError as e:  # UnicodeDecodeError is a ValueError
        raise ModelFileError(f"{path}: cannot be read as JSON ({e})") from None
    if not isinstance(data, dict):
        raise ModelFileError(f"{path}: expected a JSON object")
    return data
