"""The bf16 LSTM kernel a run trains with: never one whose gradients fail the check on this CPU."""

import json

import pytest

from charnn.device import cpu_times_s
from charnn.errors import TrainingError
from charnn.fileio import cache_root
from charnn.nn import grad_check, native
from charnn.training import kernels
from charnn.training.distributed import Ranks
from conftest import busy_cores

SIZES = kernels.Sizes(16, 32, 1, 4, 12)


def record(**errors: float) -> None:
    """Write gradient-check results into the cache, as if measured on this CPU."""
    path = cache_root() / kernels.CHECKS_FILE
    known = json.loads(path.read_text()) if path.exists() else {}
    known.update({kernels._key(k, SIZES): e for k, e in errors.items()})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(known))


@pytest.fixture(autouse=True)
def fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CHARNN_CACHE_DIR", str(tmp_path / "cache"))


def test_the_kernel_chosen_at_hidden_1024_trains_on_right_gradients():
    """At the tutorial's width oneDNN's bf16 backward is wrong on AMX CPUs: whatever this CPU is, the kernel
    chosen must pass the check at that width."""
    sizes = kernels.Sizes(64, 1024, 1, 4, 8)
    kernel, note = kernels.settle(None, "auto", sizes, Ranks())
    measured = grad_check.gradient_error("lstm", kernel, 64, 1024, 1, 4, 8)  # anew, not the cached figure
    assert measured < grad_check.MAX_ERROR
    assert kernel in note


def test_a_check_is_measured_once_and_kept_per_cpu_and_size():
    assert not (cache_root() / kernels.CHECKS_FILE).exists()
    error = kernels.gradient_error("pytorch", SIZES)
    kept = json.loads((cache_root() / kernels.CHECKS_FILE).read_text())
    assert kept == {kernels._key("pytorch", SIZES): error}
    assert "torch" in kernels._key("pytorch", SIZES) and "32x1" in kernels._key("pytorch", SIZES)
    record(pytorch=0.5)
    assert kernels.gradient_error("pytorch", SIZES) == 0.5


def test_a_kernel_failing_the_check_is_never_picked():
    record(pytorch=0.25, **{"charnn-bf16": 0.004})
    kernel, note = kernels.settle(None, "auto", SIZES, Ranks())
    assert kernel == "charnn-bf16"
    assert "--lstm-kernel pytorch's bf16 gradients are 25% off fp32" in note
    record(pytorch=0.004, **{"charnn-bf16": 0.25})
    assert kernels.settle(None, "auto", SIZES, Ranks())[0] == "pytorch"


def test_a_resumed_run_leaves_its_kernel_only_where_it_fails_here():
    record(pytorch=0.004, **{"charnn-bf16": 0.005})
    assert kernels.settle("pytorch", "auto", SIZES, Ranks()) == ("pytorch", "")
    record(pytorch=0.3)
    kernel, note = kernels.settle("pytorch", "auto", SIZES, Ranks())
    assert kernel == "charnn-bf16" and "30% off" in note


def test_a_kernel_asked_for_by_name_is_used_with_a_warning_if_it_fails():
    record(pytorch=0.3, **{"charnn-bf16": 0.005})
    kernel, note = kernels.settle(None, "pytorch", SIZES, Ranks())
    assert kernel == "pytorch" and note.startswith("warning: --lstm-kernel pytorch's bf16 gradients are 30%")
    assert kernels.settle(None, "charnn-bf16", SIZES, Ranks()) == ("charnn-bf16", "")


def test_no_kernel_passing_asks_for_fp32():
    record(pytorch=0.3, **{"charnn-bf16": 0.2})
    with pytest.raises(TrainingError, match="train with --precision fp32"):
        kernels.settle(None, "auto", SIZES, Ranks())


@pytest.fixture
def no_compiler(tmp_path, monkeypatch):
    """A PATH holding no C compiler, with the compiled steps looked up afresh under it and after it."""
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    native.compiled.cache_clear()
    yield
    native.compiled.cache_clear()


def test_without_a_c_compiler_the_kernel_line_says_the_layer_runs_slower(no_compiler):
    record(pytorch=0.25, **{"charnn-bf16": 0.004})
    kernel, note = kernels.settle(None, "auto", SIZES, Ranks())
    assert kernel == "charnn-bf16"
    assert note.endswith(
        "(its time steps run as PyTorch operations, slower: no C compiler found (cc, gcc or clang))"
    )


@pytest.mark.skipif(cpu_times_s() is None, reason="this system does not say how long threads wait for a core")
def test_a_timing_taken_while_other_programs_hold_the_cores_says_so():
    record(pytorch=0.004, **{"charnn-bf16": 0.005})
    with busy_cores():
        note = kernels.settle(None, "auto", SIZES, Ranks())[1]
    assert "the timing waited for a core" in note, note
    assert "--lstm-kernel sets one" in note
