"""The atomic writes every file of charnn goes through: all or nothing, whatever stops them."""

import pytest

from charnn.errors import RunDirError
from charnn.fileio import atomic_stream, atomic_write, cache_root, write_folder


@pytest.mark.parametrize("stop", [KeyboardInterrupt, ValueError])
def test_a_write_stopped_midway_leaves_the_old_file_and_no_temp_file(tmp_path, stop):
    path = tmp_path / "ids"
    atomic_write(path, b"old")

    def chunks():
        yield b"x" * 1000
        raise stop  # Ctrl-C, or an error in what produces the data, halfway through

    with pytest.raises(stop):
        atomic_stream(path, chunks())
    assert path.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["ids"]


def test_a_cache_that_cannot_be_written_says_where_to_point_it(tmp_path):
    (cache_root()).mkdir(parents=True, exist_ok=True)
    blocker = cache_root() / "a-file"
    blocker.write_text("")
    with pytest.raises(RunDirError, match="it is charnn's cache: set CHARNN_CACHE_DIR to a writable folder"):
        atomic_write(blocker / "inside", b"x")  # a folder that is a file
    with pytest.raises(RunDirError, match="files saved before are untouched"):
        atomic_write(tmp_path / "a" / "b", b"x")  # elsewhere: the usual words


class _StopsMidway(dict):
    """Files whose writing is stopped after the first (as export's SIGTERM handler stops it: SystemExit)."""

    def items(self):
        first = next(iter(super().items()))
        yield first
        raise SystemExit(143)


def test_a_folder_write_stopped_midway_leaves_the_old_folder_and_nothing_hidden(tmp_path):
    final = tmp_path / "export"
    write_folder(final, {"a.txt": b"old"})
    with pytest.raises(SystemExit):
        write_folder(final, _StopsMidway({"a.txt": b"new", "b.txt": b"new"}))
    assert [p.name for p in tmp_path.iterdir()] == ["export"] and (final / "a.txt").read_bytes() == b"old"


@pytest.mark.parametrize("length", [240, 250, 255])  # the temp name `.NAME.tmp-PID` would pass 255 bytes
def test_a_name_as_long_as_a_file_name_may_be_is_written_and_replaced(tmp_path, length):
    folder, file = tmp_path / ("é" * (length // 2) + "f" * (length % 2)), tmp_path / ("x" * length)
    for content in (b"old", b"new"):
        write_folder(folder, {"a.bin": content})
        atomic_write(file, content)
    assert (folder / "a.bin").read_bytes() == b"new" and file.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([folder.name, file.name])  # none left hidden


def test_a_name_that_is_not_utf8_is_written_and_replaced(tmp_path):
    folder, file = tmp_path / "q\udcff-folder", tmp_path / "q\udcff.html"  # the byte 0xff, as Python names it
    for content in (b"old", b"new"):
        write_folder(folder, {"a.bin": content})
        atomic_write(file, content)
    assert (folder / "a.bin").read_bytes() == b"new" and file.read_bytes() == b"new"
