"""The self-contained model folder: weights (safetensors), vocabulary and config (JSON), all generate needs.

Nothing is ever pickled: a model from a stranger cannot run code when it is loaded.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors
from torch import nn

from charnn.config import GenerateConfig
from charnn.declare import build_each
from charnn.device import resolve_device
from charnn.errors import CharnnError, ConfigError, ModelFileError
from charnn.fileio import moved_aside, parse_json, read_bytes, read_error, read_json, write_folder, write_json
from charnn.nn.model import CharRNN, ModelConfig, parameter_shapes
from charnn.text.vocab import Vocab

FORMAT_VERSION = 1
MODEL_DIR = "model"
# In a run folder: an overwritten run, kept until the run replacing it has a checkpoint (store/rundir.py).
REPLACED_DIR = ".replaced"
CHECKPOINTS_DIR = "checkpoints"  # a run's checkpoints/step-N/ folders (store/checkpoint.py writes them)
# Models inside the package, by the name that stands for them where no folder of that name exists.
SHIPPED_DIR = Path(__file__).resolve().parent.parent / "models"
SHIPPED = ("shakespeare",)
# Weights are saved in fp32; a shipped model may store them in bf16 to halve its size (its recorded check
# shows the loss unchanged). They are loaded into the fp32 model either way.
STORED_DTYPES = (torch.float32, torch.bfloat16)


def fp32_tensors(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in module.state_dict().items()}


def save_model(directory: Path, model: CharRNN, vocab: Vocab, training: dict) -> None:
    """Write a self-contained model folder: weights, vocabulary and config (with the weights' sha256)."""
    weights = save_tensors(fp32_tensors(model))
    config = {
        "format_version": FORMAT_VERSION,
        "model": model.config.to_dict(),
        "weights_sha256": hashlib.sha256(weights).hexdigest(),
        "training": training,
    }
    files = {
        "model.safetensors": weights,
        "vocab.json": vocab.to_json().encode("utf-8"),
        "config.json": (json.dumps(config, indent=2, ensure_ascii=False) + "\n").encode("utf-8"),
    }
    write_folder(Path(directory), files)


@dataclass
class LoadedModel:
    """A model read back from its folder, with its vocabulary and the contents of config.json."""

    model: CharRNN
    vocab: Vocab
    config: ModelConfig
    info: dict
    path: Path


def update_model_info(directory: Path, key: str, value: object) -> None:
    """Set one top-level entry of a model's config.json (not the weights or their hash), atomically."""
    info = read_json(directory / "config.json")
    info[key] = value
    write_json(directory / "config.json", info)


def resolve_model_dir(path: str | Path) -> Path:
    """The model folder meant by `path`: a run folder's model/ or a model folder itself."""
    if str(path) == "":  # "$UNSET" would else be the current folder
        raise ModelFileError("the model's path is empty: give a run or model folder")
    p = Path(path).expanduser()
    if not p.is_dir() and str(path) in SHIPPED:  # a file of that name (a corpus, say) does not hide it
        p = SHIPPED_DIR / str(path)
    if not p.exists():
        raise ModelFileError(f"{p}: no such run or model folder")
    if (p / "state.json").exists() and p.parent.name == CHECKPOINTS_DIR:  # its weights, but not a model
        run = p.parent.parent
        raise ModelFileError(
            f"{p}: a checkpoint of a run, not a model; give the run folder {run} (its best model)"
        )
    if (p / "charnn.json").exists() and (p / "model.onnx").exists():
        raise ModelFileError(
            f"{p}: an export (charnn export), not a model charnn reads; give the model it came from"
        )
    found = _model_in(p)
    if found is not None:
        return found
    if (p / "train_args.json").exists():
        if (p / REPLACED_DIR / MODEL_DIR).is_dir():  # an --overwrite that stopped before a checkpoint
            raise ModelFileError(
                f"{p}: an --overwrite of this run stopped before its first checkpoint; the run it replaced "
                f"is kept and comes back with: charnn train --out {p} --resume"
            )
        raise ModelFileError(f"{p}: the run has no model yet (one is saved at its first evaluation)")
    raise ModelFileError(f"{p}: not a charnn run or model folder (no config.json or {MODEL_DIR}/ inside)")


def _model_in(p: Path) -> Path | None:
    """The model folder in `p`: its model/, `p` itself, or a model/ moved aside by a swap (write_folder),
    where a crash between its two renames leaves only the previous model, under a temporary name. A run
    swapping its model at that moment is met by looking at model/ once more after the moved-aside copies."""

    def holds_model(folder: Path) -> bool:
        return (folder / "config.json").exists() or (folder / "model.safetensors").exists()

    for candidate in (p / MODEL_DIR, p):
        if holds_model(candidate):
            return candidate
    for candidate in (*moved_aside(p / MODEL_DIR), p / MODEL_DIR):
        if holds_model(candidate):
            return candidate
    return None


NO_VERIFY = "pass --no-verify to load it anyway"


# The settings that give the weights their shapes, in every model charnn has saved (later ones have defaults).
SHAPE_KEYS = ("vocab_size", "cell", "embedding", "hidden", "layers")


def _model_config(model: object, path: Path) -> ModelConfig:
    """The model's settings from config.json; its own problems named as settings of the file, not flags."""
    if not isinstance(model, dict):
        raise ModelFileError(f"{path}: 'model' must be a JSON object of the model's settings")
    missing = [k for k in SHAPE_KEYS if k not in model]
    if missing:
        raise ModelFileError(f"{path}: the model settings lack {', '.join(missing)}")
    try:
        return ModelConfig.from_dict(model)
    except (CharnnError, TypeError) as e:
        problem = re.sub(r"^--([a-z-]+)", lambda m: "model setting " + m[1].replace("-", "_"), str(e))
        raise ModelFileError(f"{path}: {problem}") from None


def _check_records(info: dict, path: Path) -> None:
    """The records of how the model was trained and checked, of the shapes charnn reads them in."""
    training, inference = info.get("training", {}), info.get("inference", {})
    if not isinstance(training, dict):
        raise ModelFileError(f"{path}: 'training' must be a JSON object")
    if not isinstance(training.get("init_from", {}), dict):
        raise ModelFileError(f"{path}: 'training.init_from' must be a JSON object")
    fraction, data, encoding = (training.get(k) for k in ("val_fraction", "data", "encoding"))
    if fraction is not None and (not isinstance(fraction, int | float) or not 0 <= fraction < 1):
        raise ModelFileError(f"{path}: 'training.val_fraction' must be a number in [0, 1), got {fraction!r}")
    if not isinstance(data, str | None) or not isinstance(encoding, str | None):
        raise ModelFileError(f"{path}: 'training.data' and 'training.encoding' must be text")
    try:
        codecs.lookup(encoding or "utf-8")
    except LookupError:
        raise ModelFileError(f"{path}: 'training.encoding' {encoding!r} is no text encoding") from None
    origin = training.get("init_from", {})
    if not _number_or_none(origin.get("val_loss")) or not isinstance(origin.get("added_chars", ""), str):
        raise ModelFileError(
            f"{path}: 'training.init_from' holds a val_loss that is no number or added_chars no text"
        )
    checks = inference.get("val_loss", {}) if isinstance(inference, dict) else None
    numbers = isinstance(checks, dict) and all(_number_or_none(v) and v is not None for v in checks.values())
    if not numbers:
        raise ModelFileError(f"{path}: 'inference' must be a JSON object mapping val_loss formats to numbers")
    chars = inference.get("val_chars", 0)
    if type(chars) is not int or chars < 0:
        raise ModelFileError(f"{path}: 'inference.val_chars' must be a count of chars, got {chars!r}")


def _number_or_none(value: object) -> bool:
    """A finite JSON number (not true or false), or null."""
    return value is None or (
        isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    )


def as_loaded(model: object, device: str = "cpu", verify: bool = True) -> LoadedModel:
    """A command's model, given as a run or model folder or already loaded (handed back as it is); `device`
    and `verify` are checked as the command line's flags are."""
    (options,) = build_each({"device": device, "verify": verify}, GenerateConfig)
    if isinstance(model, LoadedModel):
        return model
    if not isinstance(model, str | os.PathLike):
        raise ConfigError(
            "the model must be a run or model folder (a path) or a loaded model, "
            f"got {_a(type(model).__name__)}"
        )
    return load_model(model, resolve_device(options.device), options.verify)


def _a(noun: str) -> str:
    return f"an {noun}" if noun[:1] in "aeiou" else f"a {noun}"


_READS = 20  # a model read again at most this often while a training run keeps replacing it


def load_model(
    path: str | Path, device: str | torch.device = "cpu", verify: bool = True, advice: str = NO_VERIFY
) -> LoadedModel:
    """Load a model folder (or a run folder's best model), checking it is complete and untampered (`advice`:
    what a refusal of its weights says to do).

    A training run replaces its model/ folder whole at each new best: the files are read as they were at one
    moment (_snapshot), and a read whose folder was deleted under it (files gone) is taken again, so one
    never sees a mix of two models or a false "damaged" or "missing"."""
    reads = 0
    while True:
        directory = resolve_model_dir(path)
        before = _identity(directory)
        try:
            return _load(directory, device, verify, advice)
        except ModelFileError:
            reads += 1
            # A moved-aside copy lives only through a swap (or after a crash in one): its files may go before
            # `before` is taken, so it is read again whatever its identity, finding model/ by then. Else, not
            # replaced meanwhile (gone before the read began counts as replaced): the files are at fault.
            passing = directory in moved_aside(directory.parent / MODEL_DIR)
            if reads == _READS or (not passing and before is not None and _identity(directory) == before):
                raise


def _identity(directory: Path) -> tuple[int, int, int] | None:
    """What changes when the folder is replaced, or a file in it written (None: gone)."""
    try:
        st = directory.stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_ctime_ns


MODEL_FILES = ("config.json", "vocab.json", "model.safetensors")


def _snapshot(directory: Path) -> dict[str, bytes]:
    """The folder's files as they were at one moment: all opened before any is read, so that a run replacing
    the folder meanwhile (its old files live on while open) cannot hand over parts of two models."""
    opened: dict[str, int] = {}
    try:
        path = directory
        try:
            folder = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
            try:
                for name in MODEL_FILES:
                    path = directory / name
                    opened[name] = os.open(name, os.O_RDONLY, dir_fd=folder)
            finally:
                os.close(folder)
            files = {}
            for name, fd in opened.items():
                path = directory / name
                with os.fdopen(fd, "rb", closefd=False) as f:
                    files[name] = f.read()
        except OSError as e:
            raise read_error(path, e) from None
        return files
    finally:
        for fd in opened.values():
            os.close(fd)


def _load(directory: Path, device: str | torch.device, verify: bool, advice: str) -> LoadedModel:
    files = _snapshot(directory)
    info = parse_json(directory / "config.json", files["config.json"])
    version = info.get("format_version")
    if not isinstance(version, int):
        raise ModelFileError(f"{directory / 'config.json'}: no format_version; not a charnn model config")
    if version > FORMAT_VERSION:
        raise ModelFileError(
            f"{directory}: saved by a newer charnn (format {version}, this one reads {FORMAT_VERSION}); "
            "upgrade charnn"
        )
    _check_records(info, directory / "config.json")
    config = _model_config(info.get("model"), directory / "config.json")
    try:
        vocab_text = files["vocab.json"].decode("utf-8")
    except UnicodeDecodeError as e:
        raise ModelFileError(f"{directory / 'vocab.json'}: cannot be read ({e})") from None
    vocab = Vocab.from_json(vocab_text, str(directory / "vocab.json"))
    if len(vocab) != config.vocab_size:
        raise ModelFileError(
            f"{directory / 'vocab.json'}: holds {len(vocab)} characters but the model was built "
            f"for {config.vocab_size}"
        )
    weights_path = directory / "model.safetensors"
    sha256 = info.get("weights_sha256")
    if verify and not isinstance(sha256, str):
        raise ModelFileError(
            f"{directory / 'config.json'}: records no weights_sha256 to check the weights against; {advice}"
        )
    tensors = read_tensors(weights_path, sha256 if verify else None, advice, files["model.safetensors"])
    check_weights(tensors, parameter_shapes(config), weights_path)  # before allocating a model
    model = CharRNN(config, init=False)
    model.load_state_dict(tensors)
    model.to(device).eval()
    return LoadedModel(model, vocab, config, info, directory)


def read_tensors(
    path: Path, sha256: str | None = None, advice: str = NO_VERIFY, data: bytes | None = None
) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file (its bytes `data` where already read); with `sha256`, refuse a file whose
    hash differs (saying `advice`)."""
    if data is None:
        data = read_bytes(path)
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        raise ModelFileError(
            f"{path}: sha256 does not match the one recorded at save time (damaged or modified); {advice}"
        )
    try:
        return load_tensors(data)
    except (SafetensorError, ValueError, RuntimeError) as e:
        raise ModelFileError(f"{path}: not a readable safetensors file ({e})") from None


def load_weights(module: nn.Module, tensors: dict[str, torch.Tensor], path: Path) -> None:
    """Copy `tensors` into `module`, refusing missing or extra names, other shapes and other dtypes."""
    check_weights(tensors, {k: tuple(v.shape) for k, v in module.state_dict().items()}, path)
    module.load_state_dict(tensors)


def check_weights(tensors: dict[str, torch.Tensor], expected: dict[str, tuple[int, ...]], path: Path) -> None:
    """Refuse weights with missing or extra names, other shapes or a dtype other than float32 (or bf16)."""
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    if missing or extra:
        parts = [
            f"missing {', '.join(missing)}" if missing else "",
            f"unexpected {', '.join(extra)}" if extra else "",
        ]
        raise ModelFileError(f"{path}: weights do not match the config ({'; '.join(p for p in parts if p)})")
    for name, t in sorted(tensors.items()):
        if tuple(t.shape) != expected[name]:
            shape = tuple(t.shape)
            raise ModelFileError(f"{path}: {name} has shape {shape}, the config needs {expected[name]}")
        if t.dtype not in STORED_DTYPES:
            raise ModelFileError(f"{path}: {name} is {t.dtype}, expected torch.float32 (or torch.bfloat16)")
