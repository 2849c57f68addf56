"""The atomic writes every file of charnn goes through: all or nothing, whatever stops them."""

import pytest

from charnn.errors import RunDirError
from charnn.fileio import atomic_stream, atomic_write, cache_root


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
