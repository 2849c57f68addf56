"""Settings: the model's shape, how to train, and the named presets. Plain dataclasses, JSON-ready."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, fields

from charnn.errors import ConfigError

CELL_NAMES = ("lstm", "gru", "rnn")
MAX_LR = 10.0
BATCHINGS = ("windows", "stream", "random")


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a model's shape; the defaults are the tutorial's model."""

    vocab_size: int = 65
    cell: str = "lstm"
    embedding: int = 256
    hidden: int = 1024
    layers: int = 1
    dropout: float = 0.0
    io_dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.cell not in CELL_NAMES:
            raise ConfigError(f"--cell must be one of {', '.join(CELL_NAMES)}, got {self.cell!r}")
        for name in ("vocab_size", "embedding", "hidden", "layers"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"model setting {name} must be a positive integer, got {value!r}")
        for name in ("dropout", "io_dropout"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ConfigError(f"--{name.replace('_', '-')} must be in [0, 1), got {value}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ModelConfig:
        """Build from a dict, refusing keys this version does not know."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown model settings: {', '.join(unknown)}")
        return cls(**data)


# Settings a resumed run may change: they decide when to stop or how often to report, not what is learnt.
RESUMABLE_CHANGES = frozenset(
    {"epochs", "max_steps", "time_budget", "eval_every", "save_every", "log_every", "keep", "device"}
)


@dataclass(frozen=True)
class TrainConfig:
    """How to train; the defaults are the tutorial's (windows of 100, batch 64, Adam 1e-3, 10 epochs)."""

    data: str = "shakespeare"
    encoding: str = "utf-8"
    seq_len: int = 100
    batch_size: int = 64
    batching: str = "windows"
    epochs: int | None = None  # 10 unless --max-steps or --time-budget is given
    max_steps: int | None = None
    time_budget: float | None = None  # seconds of training steps
    lr: float = 1e-3
    schedule: str = "constant"
    warmup: int = 0
    clip: float | None = None  # max gradient norm, 0 for none; unset: 5.0 for stream batching, else 0
    weight_decay: float = 0.0
    val_fraction: float = 0.1
    eval_every: int = 0  # steps; 0 evaluates at the end of each epoch only
    save_every: int = 0  # steps; 0 saves at the end of each epoch only
    keep: int = 3
    log_every: int = 100
    seed: int = 42
    device: str = "auto"
    precision: str = "auto"

    def __post_init__(self) -> None:
        if self.clip is None:  # frozen: fill in the batching-dependent default once, so it is recorded
            object.__setattr__(self, "clip", 5.0 if self.batching == "stream" else 0.0)
        positive = ("seq_len", "batch_size", "log_every", "keep")
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        for name in ("epochs", "max_steps"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
        for name in ("warmup", "eval_every", "save_every", "clip", "weight_decay"):
            value = getattr(self, name)
            if not value >= 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be 0 or more, got {value}")
        if self.time_budget is not None and not self.time_budget > 0:
            raise ConfigError(f"--time-budget must be positive, got {self.time_budget}")
        if not 0 < self.lr <= MAX_LR:
            raise ConfigError(f"--lr must be in (0, {MAX_LR:g}], got {self.lr} (Adam likes 1e-4 to 1e-2)")
        if self.batching not in BATCHINGS:
            raise ConfigError(f"--batching must be one of {', '.join(BATCHINGS)}, got {self.batching!r}")
        if self.schedule not in ("constant", "cosine"):
            raise ConfigError(f"--schedule must be constant or cosine, got {self.schedule!r}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"--val-fraction must be in [0, 1), got {self.val_fraction}")

    @property
    def epoch_limit(self) -> int | None:
        """Epochs to run: --epochs, else 10 when no other stopping point is given, else no limit."""
        if self.epochs is not None:
            return self.epochs
        return None if (self.max_steps or self.time_budget) else 10


_CPU_BUDGET = {
    "cell": "gru",
    "layers": 2,
    "hidden": 512,
    "embedding": 64,
    "dropout": 0.1,
    "io_dropout": 0.2,
    "seq_len": 64,
    "batch_size": 128,
    "batching": "stream",
    "lr": 3e-3,
    "warmup": 100,
    "schedule": "cosine",
    "weight_decay": 0.01,
    "clip": 1.0,
}

PRESETS: dict[str, dict] = {
    "seed": {},
    "tiny": {
        "embedding": 32,
        "hidden": 128,
        "seq_len": 64,
        "batch_size": 32,
        "lr": 5e-3,
        "schedule": "cosine",
        "warmup": 20,
        "clip": 1.0,
        "max_steps": 2000,
    },
    "small": {
        "embedding": 64,
        "hidden": 512,
        "seq_len": 100,
        "batch_size": 64,
        "lr": 3e-3,
        "schedule": "cosine",
        "warmup": 50,
        "clip": 1.0,
        "max_steps": 1000,
    },
    "cpu-5m": {**_CPU_BUDGET, "lr": 5e-3, "time_budget": 300.0},
    "cpu-10m": {**_CPU_BUDGET, "dropout": 0.2, "time_budget": 600.0},
    "gpu": {
        "layers": 3,
        "hidden": 1024,
        "embedding": 128,
        "dropout": 0.3,
        "seq_len": 256,
        "batch_size": 128,
        "batching": "random",
        "lr": 2e-3,
        "warmup": 200,
        "schedule": "cosine",
        "weight_decay": 0.01,
        "clip": 1.0,
        "max_steps": 5000,
        "device": "cuda",
    },
}

PRESET_HELP = {
    "seed": "the tutorial's model and loop: LSTM 1024, embedding 256, windows of 100, batch 64, 10 epochs",
    "tiny": "LSTM 128, 2000 steps: a model in well under a minute, for tests and demos",
    "small": "LSTM 512, embedding 64, 1000 steps, cosine LR: Shakespeare-like text in ~2 min on 2 cores",
    "cpu-5m": "2 x GRU 512, 128 streams of 64-char windows, dropout, AdamW 5e-3, cosine sized to 5 minutes",
    "cpu-10m": "the cpu-5m recipe with more dropout and AdamW 3e-3, cosine sized to 10 minutes",
    "gpu": "3 x LSTM 1024 for a CUDA GPU, 5,000 steps of 128 x 256 chars (not yet measured)",
}

MODEL_FIELDS = frozenset(f.name for f in fields(ModelConfig)) - {"vocab_size"}
TRAIN_FIELDS = frozenset(f.name for f in fields(TrainConfig))


def resolve_settings(preset: str, overrides: dict, base: dict | None = None) -> tuple[dict, TrainConfig]:
    """Model settings (without vocab size) and TrainConfig from a preset (or saved `base`) plus overrides."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    given = {k: v for k, v in overrides.items() if v is not None}
    unknown = sorted(set(given) - MODEL_FIELDS - TRAIN_FIELDS)
    if unknown:
        raise ConfigError(f"unknown settings: {', '.join(unknown)}")
    merged = {**(base if base is not None else PRESETS[preset]), **given}
    model = {k: v for k, v in merged.items() if k in MODEL_FIELDS}
    ModelConfig(**model)  # validate early, before any data is read
    return model, TrainConfig(**{k: v for k, v in merged.items() if k in TRAIN_FIELDS})


def settings_dict(model: ModelConfig, cfg: TrainConfig, preset: str) -> dict:
    """What train_args.json holds: every setting used, defaults included."""
    return {"preset": preset, "model": model.to_dict(), "train": asdict(cfg)}


def resume_settings(saved: dict, overrides: dict) -> tuple[str, dict, TrainConfig]:
    """Settings of a resumed run: the saved ones, with only stopping/reporting settings changed."""
    preset = saved.get("preset", "seed")
    base = {**saved.get("model", {}), **saved.get("train", {})}
    base.pop("vocab_size", None)
    given = {k: v for k, v in overrides.items() if v is not None}
    changed = sorted(k for k, v in given.items() if k not in RESUMABLE_CHANGES and base.get(k) != v)
    if changed:
        diffs = ", ".join(f"{k} {base.get(k)!r} -> {given[k]!r}" for k in changed)
        raise ConfigError(f"cannot resume with different settings ({diffs}); start a new run instead")
    model, cfg = resolve_settings(preset, given, base)
    return preset, model, cfg


def describe_presets() -> str:
    return "\n".join(f"  {name:<8} {PRESET_HELP[name]}" for name in PRESETS)


def parse_duration(text: str) -> float:
    """Seconds in a duration such as `90s`, `10m`, `2h` or a plain number of seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", text.lower())
    if not match:
        raise ConfigError(f"not a duration: {text!r} (use e.g. 90s, 10m or 2h)")
    value = float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[match.group(2)]
    if value <= 0:
        raise ConfigError(f"a duration must be positive, got {text!r}")
    return value
