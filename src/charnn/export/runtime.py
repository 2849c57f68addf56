"""Running an exported folder with onnxruntime (Python): what the parity tests and the benchmark drive."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from charnn.errors import CharnnError
from charnn.export.graph import EXTRA_HINT


class OnnxStepper:
    """An exported folder's step graph in an onnxruntime session, on the CPU."""

    def __init__(self, folder: str | Path, threads: int = 1):
        try:
            import onnxruntime
        except ImportError:
            raise CharnnError(f"running an ONNX export needs onnxruntime: {EXTRA_HINT}") from None
        folder = Path(folder)
        self.meta = json.loads((folder / "charnn.json").read_text(encoding="utf-8"))
        self.chars = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))["chars"]
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        self.session = onnxruntime.InferenceSession(
            str(folder / "model.onnx"), options, providers=["CPUExecutionProvider"]
        )
        self.state_names = [n for n in self.meta["inputs"] if n != "ids"]

    def zero_state(self, batch: int) -> dict[str, np.ndarray]:
        m = self.meta["model"]
        return {n: np.zeros((m["layers"], batch, m["hidden"]), np.float32) for n in self.state_names}

    def step(self, ids: np.ndarray, state: dict[str, np.ndarray]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Logits (batch, vocab) after one char per sequence, and the next state."""
        logits, *rest = self.session.run(None, {"ids": ids.astype(np.int64), **state})
        return logits, dict(zip(self.state_names, rest, strict=True))

    def greedy(self, start: str, length: int) -> str:
        """`start` and `length` chars, always the most likely next one (the start fed one char per step)."""
        index = {c: i for i, c in enumerate(self.chars)}
        state, logits = self.zero_state(1), None
        for c in start or self.meta["default_start"]:
            logits, state = self.step(np.array([index[c]]), state)
        out = []
        for i in range(length):
            nxt = int(logits[0].argmax())
            out.append(self.chars[nxt])
            if i + 1 < length:
                logits, state = self.step(np.array([nxt]), state)
        return start + "".join(out)
