"""Resumable checkpoints: the fp32 weights, the optimizer's state and the loop's state, written as a whole.

Weights and optimizer tensors are safetensors; everything else is JSON in state.json. Nothing is pickled.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save as save_tensors
from torch import nn

from charnn.errors import ModelFileError
from charnn.fileio import read_json, write_folder
from charnn.store.model_dir import CHECKPOINTS_DIR, FORMAT_VERSION, fp32_tensors, read_tensors

RESUME_BEFORE = "delete this checkpoint folder to resume from the one before"


def checkpoint_name(step: int) -> str:
    return f"step-{step:09d}"


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    folder = Path(run_dir) / CHECKPOINTS_DIR
    if not folder.is_dir():
        return []
    found = [
        p for p in folder.iterdir() if p.is_dir() and p.name.startswith("step-") and p.name[5:].isdigit()
    ]
    return sorted(found, key=lambda p: int(p.name[5:]))


def optimizer_to_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimizer's state into tensors (for safetensors) and JSON-able rest."""
    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    for idx, entry in sd["state"].items():
        for key, value in entry.items():
            if torch.is_tensor(value):
                tensors[f"state.{idx}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{idx}.{key}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def optimizer_from_tensors(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    """Rebuild an optimizer state_dict from `optimizer_to_tensors` output."""
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        _, idx, key = name.split(".", 2)
        state.setdefault(int(idx), {})[key] = value
    for name, value in meta["scalars"].items():
        idx, key = name.split(".", 1)
        state.setdefault(int(idx), {})[key] = value
    groups = [
        {k: tuple(v) if isinstance(v, list) and k != "params" else v for k, v in g.items()}
        for g in meta["param_groups"]
    ]
    return {"state": state, "param_groups": groups}


def save_checkpoint(
    run_dir: Path,
    step: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    state: dict,
    loop_tensors: dict[str, torch.Tensor],
) -> Path:
    """Write checkpoints/step-N/ (weights, optimizer and loop state, state.json) atomically as a whole.

    `loop_tensors` (e.g. a recurrent state carried between batches) go beside the optimizer's tensors
    under the prefix `loop.`.
    """
    weights = save_tensors(fp32_tensors(model))
    opt_tensors, opt_meta = optimizer_to_tensors(optimizer)
    opt_tensors.update({f"loop.{k}": v.detach().cpu().contiguous() for k, v in loop_tensors.items()})
    opt_bytes = save_tensors(opt_tensors) if opt_tensors else save_tensors({"empty": torch.zeros(0)})
    full_state = dict(
        state,
        format_version=FORMAT_VERSION,
        step=step,
        optimizer=opt_meta,
        weights_sha256=hashlib.sha256(weights).hexdigest(),
        optimizer_sha256=hashlib.sha256(opt_bytes).hexdigest(),
    )
    final = Path(run_dir) / CHECKPOINTS_DIR / checkpoint_name(step)
    final.parent.mkdir(parents=True, exist_ok=True)
    files = {
        "model.safetensors": weights,
        "optimizer.safetensors": opt_bytes,
        "state.json": (json.dumps(full_state, indent=1) + "\n").encode("utf-8"),
    }
    write_folder(final, files)
    return final


@dataclass
class Checkpoint:
    """A checkpoint read back and verified: weights, optimizer state_dict, loop tensors and state.json."""

    weights: dict[str, torch.Tensor]
    optimizer: dict
    loop_tensors: dict[str, torch.Tensor]
    state: dict
    path: Path


def load_checkpoint(path: Path) -> Checkpoint:
    """Read and verify one checkpoint folder."""
    try:
        state = read_json(path / "state.json")
    except ModelFileError as e:
        raise ModelFileError(f"{e}; {RESUME_BEFORE}") from None
    version = state.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise ModelFileError(f"{path / 'state.json'}: damaged (no format version); {RESUME_BEFORE}")
    if version > FORMAT_VERSION:
        raise ModelFileError(f"{path}: written by a newer charnn; upgrade charnn to resume it")
    weights = read_tensors(path / "model.safetensors", state.get("weights_sha256"), RESUME_BEFORE)
    opt_tensors = read_tensors(path / "optimizer.safetensors", state.get("optimizer_sha256"), RESUME_BEFORE)
    opt_tensors.pop("empty", None)
    loop = {k.removeprefix("loop."): opt_tensors.pop(k) for k in list(opt_tensors) if k.startswith("loop.")}
    try:
        optimizer = optimizer_from_tensors(opt_tensors, state["optimizer"])
    except (KeyError, ValueError, TypeError) as e:
        raise ModelFileError(f"{path / 'state.json'}: optimizer state is damaged ({e})") from None
    return Checkpoint(weights, optimizer, loop, state, path)
