"""Packing a trained run into the model shipped inside the package (scripts/train_shipped_model.sh runs it).

    python -m charnn.export.shipped RUN DEST --command "how RUN was trained"

The weights are stored in bf16 where the validation loss measured with exactly those weights stays within
TOLERANCE_NATS of fp32's (else in fp32); the folder records the command, the commit, the machine and both
losses, and it loads through the same sha256 tamper check as any model folder.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import platform
import subprocess
from pathlib import Path

import torch
from safetensors.torch import save as save_tensors

from charnn.device import describe_cpu
from charnn.evaluation import loss_carried, weight_checks
from charnn.fileio import write_folder
from charnn.nn.stepper import TOLERANCE_NATS
from charnn.store.model_dir import FORMAT_VERSION, LoadedModel, fp32_tensors, load_model
from charnn.text.corpus import load_corpus, split


def val_ids(loaded: LoadedModel):
    """The validation split of the text the model was trained on."""
    training = loaded.info["training"]
    corpus = load_corpus(training["data"], training.get("encoding", "utf-8"), vocab=loaded.vocab)
    return split(corpus.ids, training.get("val_fraction", 0.1))[1]


def commit() -> str:
    """The checkout's commit (with "+changes" where files differ from it), or "unknown" outside git."""
    root = Path(__file__).resolve().parents[3]
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "src"], cwd=root, capture_output=True, text=True
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head.stdout.strip() + ("+changes" if dirty.stdout.strip() else "")


def pack(run: str | Path, dest: str | Path, command: str, source_commit: str | None = None) -> dict:
    """Write the shipped model folder `dest` from `run`'s best model; returns its training record."""
    loaded = load_model(run)
    ids = val_ids(loaded)
    fp32 = loss_carried(loaded.model, ids).nats
    tensors = fp32_tensors(loaded.model)
    rounded = {k: v.to(torch.bfloat16) for k, v in tensors.items()}
    loaded.model.load_state_dict(rounded)  # the fp32 model now holds exactly the bf16-stored values
    bf16 = loss_carried(loaded.model, ids).nats
    stored = "bf16" if bf16 - fp32 <= TOLERANCE_NATS else "fp32"
    if stored == "fp32":
        loaded.model.load_state_dict(tensors)
    weights = save_tensors(rounded if stored == "bf16" else tensors)
    training = {
        **loaded.info["training"],
        "command": command,
        "commit": source_commit or commit(),
        "machine": f"{describe_cpu()['cpu']} ({platform.machine()})",
        "val_loss_fp32": fp32,
        "stored_weights": stored,
        "val_loss": bf16 if stored == "bf16" else fp32,
    }
    training["val_bits_per_char"] = training["val_loss"] / math.log(2)
    config = {
        "format_version": FORMAT_VERSION,
        "model": loaded.config.to_dict(),
        "weights_sha256": hashlib.sha256(weights).hexdigest(),
        "training": training,
        "inference": {"val_chars": len(ids), "val_loss": weight_checks(loaded.model, ids)},
    }
    files = {
        "model.safetensors": weights,
        "vocab.json": loaded.vocab.to_json().encode("utf-8"),
        "config.json": (json.dumps(config, indent=2, ensure_ascii=False) + "\n").encode("utf-8"),
    }
    write_folder(Path(dest), files)
    return training


def main() -> None:
    parser = argparse.ArgumentParser(description="Pack a trained run as the model shipped with charnn.")
    parser.add_argument("run")
    parser.add_argument("dest")
    parser.add_argument("--command", required=True, help="how the run was trained, recorded in the folder")
    parser.add_argument("--commit", help="the commit that trained the run (default: this checkout's)")
    args = parser.parse_args()
    training = pack(args.run, args.dest, args.command, args.commit)
    print(
        f"{args.dest}: {training['stored_weights']} weights, val loss {training['val_loss']:.4f} nats/char "
        f"(fp32 {training['val_loss_fp32']:.4f})"
    )


if __name__ == "__main__":
    main()
