"""`--data URL`: download a text once into the user cache, with a progress bar, and reuse it after."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import sys
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from charnn.errors import DataError
from charnn.fileio import atomic_write, cache_root, cached_sidecar, fsync_dir

TIMEOUT_S = 60
_BLOCK = 1 << 16


def download_path(url: str) -> Path:
    """Where the download of `url` is kept: a name from the URL plus a short hash of it."""
    tail = re.sub(r"[^A-Za-z0-9._-]", "_", url.rstrip("/").rsplit("/", 1)[-1])[:60] or "download"
    return cache_root() / "downloads" / f"{hashlib.sha256(url.encode()).hexdigest()[:16]}-{tail}"


def fetch(url: str, quiet: bool = False) -> Path:
    """The local copy of `url`, downloading it first if needed; a partial download is never kept."""
    path = download_path(url)
    meta_path = path.with_name(path.name + ".json")
    if _kept(path, meta_path, url):
        return path
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"{path.parent}: cannot create the download cache ({e.strerror or e})") from None
    tmp = path.with_name(f".{path.name}.part-{os.getpid()}")
    try:
        size, digest = _download(url, tmp, quiet)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as e:
        tmp.unlink(missing_ok=True)
        reason = getattr(e, "reason", None) or e
        raise DataError(f"{url}: download failed ({reason}); nothing was kept") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    atomic_write(meta_path, json.dumps({"url": url, "size": size, "sha256": digest}).encode())
    return path


def _kept(path: Path, meta_path: Path, url: str) -> bool:
    """Whether a whole earlier download of `url` is kept (metadata damaged in any way: download again)."""
    cached = cached_sidecar(meta_path, path)
    if cached is None:
        return False
    meta, size = cached
    return meta.get("url") == url and meta.get("size") == size


def _download(url: str, dest: Path, quiet: bool) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    request = urllib.request.Request(url, headers={"User-Agent": "charnn"})
    with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response, open(dest, "wb") as out:
        total = response.headers.get("Content-Length")
        expected = int(total) if total and total.isdigit() else None
        bar = tqdm(total=expected, unit="B", unit_scale=True, desc="download", disable=quiet, file=sys.stderr)
        with bar:
            while block := response.read(_BLOCK):
                out.write(block)
                digest.update(block)
                size += len(block)
                bar.update(len(block))
        out.flush()
        os.fsync(out.fileno())
    if expected is not None and size != expected:
        raise ValueError(f"got {size:,} of {expected:,} bytes")
    return size, digest.hexdigest()
