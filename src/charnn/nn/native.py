"""charnn's compiled CPU code: the LSTM layer's time steps in training and the pointwise part of
generation's LSTM and GRU steps with bf16 weights (lstm_steps.c), dropout (dropout.c), a transpose of
16-bit matrices (transpose.c), generation's product with int8 weights (int8.c, taken on CPUs with AMX) and,
on CPUs with AMX, the layer's loops with their recurrent products (amx.c), built on first use with this
machine's C compiler, for its CPU (-march=native), and kept in the cache folder under a name that changes
with the sources, the flags, the compiler and the CPU. Where no compiler is found or the build fails,
`compiled()` says why, and the layer runs its steps as PyTorch operations and dropout is PyTorch's instead
(slower)."""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch
from torch import Tensor

from charnn.device import cpu_info
from charnn.fileio import cache_root

HERE = Path(__file__).parent
SOURCES = [HERE / "lstm_steps.c", HERE / "dropout.c", HERE / "transpose.c", HERE / "amx.c", HERE / "int8.c"]
HEADERS = [HERE / "bf16.h", HERE / "lstm_steps.h"]
FLAGS = ["-O3", "-march=native", "-shared", "-fPIC"]
# Tried in order: 512-bit vectors where the CPU has them (4% faster a step on AMX than 256-bit), OpenMP (it
# shares PyTorch's thread pool: the same libgomp), then neither.
WIDE = ["-mprefer-vector-width=512"] if platform.machine() in ("x86_64", "AMD64") else []
EXTRA_FLAGS = ([*WIDE, "-fopenmp"], ["-fopenmp"], []) if WIDE else (["-fopenmp"], [])
BUILD_TIMEOUT = 120.0  # seconds; a build takes well under one


class Compiled:
    """The compiled functions, called with tensors (contiguous, of the dtypes the C sources name)."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        i64, ptr, u32 = ctypes.c_int64, ctypes.c_void_p, ctypes.c_uint32
        self._forward, self._backward = lib.lstm_forward_step, lib.lstm_backward_step
        self._forward.argtypes = [i64, i64, *[ptr] * 10, i64, ctypes.c_int]
        self._backward.argtypes = [i64, i64, *[ptr] * 8, i64, ptr, ctypes.c_int]
        self._dropout = lib.dropout_apply
        self._dropout.argtypes = [i64, ptr, ptr, ctypes.c_int, u32, ctypes.c_float, u32, u32, ctypes.c_int]
        self._lstm_generate, self._gru_generate = lib.lstm_generate_step, lib.gru_generate_step
        self._lstm_generate.argtypes = [i64, i64, *[ptr] * 6, ctypes.c_int]
        self._gru_generate.argtypes = [i64, i64, *[ptr] * 6, ctypes.c_int]
        self._transpose = lib.transpose16
        self._transpose.argtypes = [i64, i64, ptr, i64, ptr, ctypes.c_int]
        self._amx_pack, self._amx_product = lib.amx_pack, lib.amx_product
        self._amx_pack.argtypes = [i64, i64, ptr, ctypes.c_int, ptr, ctypes.c_int]
        self._amx_product.argtypes = [i64, i64, i64, ptr, ptr, ptr, ctypes.c_int]
        self._forward_loop, self._backward_loop = lib.lstm_forward_loop, lib.lstm_backward_loop
        self._forward_loop.argtypes = [i64, i64, i64, *[ptr] * 12, ctypes.c_int]
        self._backward_loop.argtypes = [i64, i64, i64, *[ptr] * 9, i64, ptr, ptr, ctypes.c_int]
        steps = (self._forward, self._backward, self._lstm_generate, self._gru_generate)
        amx = (self._amx_pack, self._amx_product, self._forward_loop, self._backward_loop)
        self._int8_product = lib.int8_product
        self._int8_product.argtypes = [i64, i64, i64, *[ptr] * 6, ctypes.c_int]
        for function in (*steps, self._dropout, self._transpose, *amx, self._int8_product):
            function.restype = None
        lib.amx_ready.argtypes, lib.amx_ready.restype = [], ctypes.c_int
        # Intel's matrix units, where this CPU has them and the OS lets this process use them
        self.amx = bool(lib.amx_ready())

    def forward(
        self, gates: Tensor, x_part: Tensor, bias: Tensor, recurrent: Tensor, c_prev: Tensor, cell: Tensor,
        tanh_cell: Tensor, h: Tensor, h_t: Tensor | None, ids: Tensor | None = None,
    ) -> None:  # fmt: skip
        """One forward step; x_part holds a row per batch row, or where `ids` (int64, one per batch row) is
        given, it is a table of rows that they pick."""
        batch, hidden = h.shape
        self._forward(
            batch, hidden, gates.data_ptr(), x_part.data_ptr(), None if ids is None else ids.data_ptr(),
            bias.data_ptr(), recurrent.data_ptr(),
            c_prev.data_ptr(), cell.data_ptr(), tanh_cell.data_ptr(), h.data_ptr(),
            None if h_t is None else h_t.data_ptr(), 0 if h_t is None else h_t.stride(0),
            torch.get_num_threads(),
        )  # fmt: skip

    def backward(
        self, gates: Tensor, c_prev: Tensor, tanh_cell: Tensor, d_out: Tensor, dh_next: Tensor, dc: Tensor,
        dz: Tensor, sums: Tensor, ids: Tensor | None = None,
    ) -> None:  # fmt: skip
        """One backward step; dz is added into `sums` (threads, rows, 4 hidden; fp32), a block per thread:
        to row ids[b] for batch row b where `ids` is given, else to the only row."""
        batch, hidden = dc.shape
        self._backward(
            batch, hidden, gates.data_ptr(), c_prev.data_ptr(), tanh_cell.data_ptr(), d_out.data_ptr(),
            dh_next.data_ptr(), dc.data_ptr(), dz.data_ptr(), sums.data_ptr(), sums.shape[1],
            None if ids is None else ids.data_ptr(), sums.shape[0],
        )  # fmt: skip

    def lstm_generate_step(
        self, x_part: Tensor, ids: Tensor | None, recurrent: Tensor, c_prev: Tensor
    ) -> tuple[Tensor, Tensor]:
        """One LSTM step for generation: the new output and cell (fp32, batch x hidden) from the input part
        (fp32, biases in: a table whose row ids[b] (int64) is batch row b's where `ids` is given, else a row
        per batch row), the recurrent part (bf16, batch x 4 hidden) and the cell before (fp32)."""
        batch, hidden = c_prev.shape
        _check_step_inputs(4, x_part, ids, recurrent, c_prev)
        h, c = (torch.empty(batch, hidden, dtype=torch.float32) for _ in range(2))
        self._lstm_generate(
            batch, hidden, x_part.data_ptr(), None if ids is None else ids.data_ptr(), recurrent.data_ptr(),
            c_prev.data_ptr(), c.data_ptr(), h.data_ptr(), _threads(batch),
        )  # fmt: skip
        return h, c

    def gru_generate_step(
        self, x_part: Tensor, ids: Tensor | None, recurrent: Tensor, bias: Tensor, h_prev: Tensor
    ) -> Tensor:
        """One GRU step for generation: the new state (fp32, batch x hidden) from the input part (as for
        `lstm_generate_step`, the input biases in), the recurrent part (bf16, batch x 3 hidden) and its
        biases (fp32, 3 hidden), and the state before (fp32)."""
        batch, hidden = h_prev.shape
        _check_step_inputs(3, x_part, ids, recurrent, h_prev, bias)
        h = torch.empty(batch, hidden, dtype=torch.float32)
        self._gru_generate(
            batch, hidden, x_part.data_ptr(), None if ids is None else ids.data_ptr(), recurrent.data_ptr(),
            bias.data_ptr(), h_prev.data_ptr(), h.data_ptr(), _threads(batch),
        )  # fmt: skip
        return h

    def transposed(self, x: Tensor) -> Tensor:
        """x.t() as a new contiguous tensor, for x 2-D of 16-bit elements (bf16)."""
        x = x if x.stride(1) == 1 else x.contiguous()
        rows, cols = x.shape
        out = torch.empty(cols, rows, dtype=x.dtype)
        self._transpose(rows, cols, x.data_ptr(), x.stride(0), out.data_ptr(), torch.get_num_threads())
        return out

    def amx_pack(self, w: Tensor, transposed: bool = False) -> Tensor:
        """The right side of `amx_product`: w.t() for w (n, k), or w itself for w (k, n) where `transposed`;
        bf16, n % 16 == 0 and k % 32 == 0. Shaped (n / 16, k / 32, 512): a tile of the units per row."""
        w = w.contiguous()
        k, n = w.shape if transposed else w.shape[::-1]
        packed = torch.empty(n // 16, k // 32, 512, dtype=torch.bfloat16)
        self._amx_pack(n, k, w.data_ptr(), transposed, packed.data_ptr(), torch.get_num_threads())
        return packed

    def amx_product(self, x: Tensor, packed: Tensor) -> Tensor:
        """x @ the matrix `packed` holds (amx_pack), in bf16 (fp32 sums, rounded once) on the AMX units:
        x bf16 of k columns, its rows a multiple of 16."""
        x = x.contiguous()
        rows, n, k = x.shape[0], packed.shape[0] * 16, packed.shape[1] * 32
        if x.dtype != torch.bfloat16 or rows % 16 or x.shape[1] != k:
            raise ValueError(f"the AMX product takes bf16 rows in 16s of {k}, got {x.dtype} {tuple(x.shape)}")
        out = torch.empty(rows, n, dtype=torch.bfloat16)
        self._amx_product(
            rows, n, k, x.data_ptr(), packed.data_ptr(), out.data_ptr(), torch.get_num_threads()
        )
        return out

    def int8_product(self, x: Tensor, q: Tensor, scales: Tensor) -> Tensor:
        """x @ (q * scales[:, None]).t() in bf16, for x fp32 (rows, in), q int8 (out, in) and scales fp32
        (out,): each row of x scaled to 16-bit integers, the sums exact (int8.c). Rows of x holding a NaN or
        an infinity come out NaN."""
        if q.dim() != 2 or x.dim() != 2 or x.shape[1] != q.shape[1]:
            raise ValueError(
                f"the int8 product takes rows of its weights' width, got {tuple(x.shape)} by {tuple(q.shape)}"
            )
        (rows, width), out = x.shape, q.shape[0]
        expected = (torch.float32, torch.int8, torch.float32, (out,))
        if (x.dtype, q.dtype, scales.dtype, tuple(scales.shape)) != expected:
            raise ValueError(
                "the int8 product takes fp32 rows, int8 weights and an fp32 scale per weight row"
            )
        if not all(t.is_contiguous() and t.device.type == "cpu" for t in (x, q, scales)):
            raise ValueError("the int8 product takes contiguous tensors on the CPU")
        y = torch.empty(rows, out, dtype=torch.bfloat16)
        scratch = torch.empty(rows, width, dtype=torch.int16)  # the rows scaled to 16-bit integers
        x_scales = torch.empty(rows, dtype=torch.float64)
        self._int8_product(
            rows, width, out, x.data_ptr(), q.data_ptr(), scales.data_ptr(), scratch.data_ptr(),
            x_scales.data_ptr(), y.data_ptr(), torch.get_num_threads(),
        )  # fmt: skip
        return y

    def forward_loop(
        self, gates: Tensor, x_part: Tensor, ids: Tensor | None, bias: Tensor, packed: Tensor, h0: Tensor,
        c0: Tensor, cells: Tensor, tanh_cells: Tensor, out: Tensor, h_before: Tensor,
    ) -> None:  # fmt: skip
        """All the forward's steps (`forward`'s tensors for every step: x_part a row per step and batch row,
        or a table where `ids` (steps x batch) is given), each after its product with the recurrent weights
        `packed` (amx_pack) on the AMX units; h_before's first `batch` columns hold h0 transposed."""
        steps, batch, hidden = out.shape
        recurrent = torch.empty(batch, 4 * hidden, dtype=torch.bfloat16)  # each step's product
        ids_at = None if ids is None else ids.data_ptr()
        self._forward_loop(
            steps, batch, hidden, gates.data_ptr(), x_part.data_ptr(), ids_at, bias.data_ptr(),
            packed.data_ptr(), h0.data_ptr(), c0.data_ptr(), cells.data_ptr(), tanh_cells.data_ptr(),
            out.data_ptr(), h_before.data_ptr(), recurrent.data_ptr(), torch.get_num_threads(),
        )  # fmt: skip

    def backward_loop(
        self, gates: Tensor, cells: Tensor, c0: Tensor, tanh_cells: Tensor, d_out: Tensor, dh_next: Tensor,
        dc: Tensor, dz: Tensor, sums: Tensor, ids: Tensor | None, packed: Tensor,
    ) -> None:  # fmt: skip
        """All the backward's steps, last first (`backward`'s tensors for every step), each followed by the
        product of its dz with the recurrent weights `packed` (amx_pack, transposed) into dh_next: the last
        step's output gradient from later ones going in, the first step's input state's coming out."""
        steps, batch, hidden = d_out.shape
        self._backward_loop(
            steps, batch, hidden, gates.data_ptr(), cells.data_ptr(), c0.data_ptr(), tanh_cells.data_ptr(),
            d_out.data_ptr(), dh_next.data_ptr(), dc.data_ptr(), dz.data_ptr(), sums.data_ptr(),
            sums.shape[1], None if ids is None else ids.data_ptr(), packed.data_ptr(), sums.shape[0],
        )  # fmt: skip

    def dropout(self, x: Tensor, out: Tensor, drop_below: int, scale: float, seed: int) -> None:
        """out = x * scale where the hash of (seed, element) is at least drop_below (of 2^32), else 0;
        x and out contiguous fp32 or bf16, under 2^32 elements (dropout.c)."""
        self._dropout(
            x.numel(), x.data_ptr(), out.data_ptr(), x.dtype == torch.bfloat16, drop_below, scale,
            seed & 0xFFFFFFFF, seed >> 32, torch.get_num_threads(),
        )  # fmt: skip


def _threads(batch: int) -> int:
    return max(1, min(torch.get_num_threads(), batch))


def _check_step_inputs(
    gates: int,
    x_part: Tensor,
    ids: Tensor | None,
    recurrent: Tensor,
    state: Tensor,
    bias: Tensor | None = None,
) -> None:
    """A generation step's tensors, as the C steps read them: contiguous, on the CPU, of the shapes and
    dtypes their docstrings name (`state` fp32, batch x hidden). The ids' range is the caller's to check
    (StepModel does, lookup.check_ids)."""
    batch, hidden = state.shape
    expected = [
        ("input part", x_part, (batch if ids is None else x_part.shape[0], gates * hidden), torch.float32),
        ("recurrent part", recurrent, (batch, gates * hidden), torch.bfloat16),
        ("state", state, (batch, hidden), torch.float32),
    ]
    if ids is not None:
        expected.append(("ids", ids, (batch,), torch.int64))
    if bias is not None:
        expected.append(("bias", bias, (gates * hidden,), torch.float32))
    for name, t, shape, dtype in expected:
        if t.shape != shape or t.dtype != dtype or not t.is_contiguous() or t.device.type != "cpu":
            raise ValueError(
                f"a generation step takes its {name} as a contiguous {dtype} of {shape} on the CPU"
            )


@functools.cache
def compiled() -> tuple[Compiled | None, str]:
    """The compiled functions, or None and why not."""
    compiler = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if compiler is None:
        return None, "no C compiler found (cc, gcc or clang)"
    try:
        version = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError) as e:
        return None, f"{compiler} does not run ({e})"
    errors = []
    code = [p.read_text() for p in SOURCES + HEADERS]
    for extra in EXTRA_FLAGS:
        flags = FLAGS + extra
        tag = "\n".join([*code, *flags, version, cpu_info()[0], *sorted(cpu_info()[1])])
        path = cache_root() / "native" / f"charnn-{hashlib.sha256(tag.encode()).hexdigest()[:16]}.so"
        try:
            if not path.exists():
                _build(compiler, flags, path)
            return Compiled(ctypes.CDLL(str(path))), ""
        except (OSError, subprocess.SubprocessError) as e:
            errors.append(_first_error(str(e)) or type(e).__name__)
    return None, f"the C build failed ({errors[-1]})"


def _first_error(text: str) -> str:
    """The line of a compiler's output that says what went wrong (else its last line)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return next((line for line in lines if "error" in line.lower()), lines[-1] if lines else "")


def _build(compiler: str, flags: list[str], path: Path) -> None:
    """Compile to a file beside `path`, then rename it into place (builds in two processes may race)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, suffix=".so")
    os.close(fd)
    try:
        done = subprocess.run(
            [compiler, *flags, *map(str, SOURCES), "-o", temporary],
            capture_output=True,
            text=True,
            timeout=BUILD_TIMEOUT,
        )
        if done.returncode != 0:
            raise OSError(done.stderr or f"{compiler} exited with {done.returncode}")
        os.replace(temporary, path)
    finally:
        Path(temporary).unlink(missing_ok=True)
