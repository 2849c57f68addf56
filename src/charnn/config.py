"""Every setting of charnn, declared once: name, default, type, check, one-line help, commands taking it.

A setting is a field of one of the frozen dataclasses below, declared with `setting(...)` (declare.py).
The command line's flags (cli.py), the Python API's keywords (api.py, training/run.py), the HTTP API's
request fields (server/app.py) and the flag tables of docs/cli.md are built from these declarations or
tested against them. The environment variables charnn reads are read here and nowhere else.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, ClassVar

from charnn.declare import SEED_BOUNDS, Declared, declared, one_of, parse_duration, setting, settle
from charnn.errors import ConfigError
from charnn.tool_settings import TEMPERATURE, CopyingConfig, ExportConfig, InspectConfig

CELLS = ("lstm", "gru", "rnn")
BATCHINGS = ("windows", "stream", "random")
SCHEDULES = ("constant", "cosine")
DEVICES = ("auto", "cpu", "cuda")
COMPUTE_DTYPES = ("auto", "fp32", "bf16", "fp16")
WEIGHT_FORMATS = ("fp32", "bf16", "int8")
LSTM_KERNELS = ("auto", "pytorch", "charnn-bf16")
# The values of $CHARNN_LSTM_KERNEL and of checkpoints from before --lstm-kernel existed.
OLD_LSTM_KERNELS = {"fused": "pytorch", "charnn": "charnn-bf16"}
SPLITS = ("val", "train", "all")
MAX_LR = 10.0
MAX_LENGTH = 1_000_000
READERS = ("generate", "evaluate", "info", "serve", "export", "copying", "inspect")  # read a model
MAX_SAMPLES = 1024
MAX_TOTAL_CHARS = 10_000_000
STREAMS_PER_CORE = 64  # charnn serve's default capacity (docs/serve.md has the measurements)
MAX_INSPECT_CHARS = 20_000  # one page's worth: each char carries its guesses and unit values

ENVIRONMENT = {  # the environment variables charnn reads, and what each one does
    "CHARNN_CACHE_DIR": "where encoded big corpora and downloads are kept (default: the user cache folder)",
    "CHARNN_LSTM_KERNEL": "the default of train --lstm-kernel",
    "CHARNN_DIST_TIMEOUT": "the default of train --dist-timeout, in seconds",
    "CHARNN_DEBUG": "set to 1 to see the traceback of an internal error",
    "CHARNN_ORT_WEB": "the onnxruntime-web dist/ folder that export --format web bundles",
}


def _from_environment(name: str, default: Any, parse: Callable[[str], Any] = str) -> Callable[[], Any]:
    def read() -> Any:
        text = os.environ.get(name)
        if not text:
            return default
        try:
            return parse(text)
        except ConfigError as e:
            raise ConfigError(f"{name}: {e}") from None

    return read


def env_path(name: str) -> Path | None:
    """The folder $name (CHARNN_CACHE_DIR, CHARNN_ORT_WEB) names, where set."""
    text = os.environ.get(name)
    return Path(text).expanduser() if text else None


def debug() -> bool:
    """Whether $CHARNN_DEBUG asks for tracebacks."""
    return bool(os.environ.get("CHARNN_DEBUG"))


def torchrun_ranks() -> tuple[int, int, int]:
    """(RANK, WORLD_SIZE, LOCAL_RANK) as torchrun sets them; (0, 1, 0) outside torchrun."""
    try:
        return tuple(
            int(os.environ.get(k, d)) for k, d in (("RANK", 0), ("WORLD_SIZE", 1), ("LOCAL_RANK", 0))
        )
    except ValueError:
        raise ConfigError("RANK, WORLD_SIZE and LOCAL_RANK must be integers (torchrun sets them)") from None


def _weights(default: str, choices: tuple[str, ...], use: str = "while stepping") -> Any:
    auto = "; auto: the fastest format the model's saved check allows (else fp32)" * ("auto" in choices)
    return setting(
        default,
        f"weight format {use}: fp32, bf16 or int8 (one scale per row){auto}",
        choices=choices,
        aliases=("--precision",),
    )


def _device(default: str, help: str = "where to run", **how: Any) -> Any:
    return setting(default, help, choices=DEVICES, **how)


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """Everything needed to rebuild a model's shape; the defaults are the tutorial's model."""

    commands: ClassVar = ("train",)
    vocab_size: int = setting(65, "characters in the vocabulary (taken from the text)", ge=1, flag=False)
    cell: str = setting("lstm", "recurrent cell (rnn: tanh)", choices=CELLS, group="model")
    embedding: int = setting(256, "embedding size", ge=1, group="model")
    hidden: int = setting(1024, "units per recurrent layer", ge=1, group="model")
    layers: int = setting(1, "stacked recurrent layers", ge=1, group="model")
    dropout: float = setting(0.0, "dropout between recurrent layers", ge=0, lt=1, group="model")
    io_dropout: float = setting(
        0.0, "dropout on the embedding's output and the last layer's output", ge=0, lt=1, group="model"
    )
    weight_dropout: float = setting(
        0.0,
        "DropConnect: this share of the recurrent weights zeroed afresh each step",
        ge=0,
        lt=1,
        group="model",
    )

    def __post_init__(self) -> None:
        settle(self)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ModelConfig:
        """Build from a dict, refusing keys this version does not know."""
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise ConfigError(f"unknown model settings: {', '.join(unknown)}")
        return cls(**data)


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """How to train; the defaults are the tutorial's (windows of 100, batch 64, Adam 1e-3, 10 epochs)."""

    commands: ClassVar = ("train",)
    data: str = setting(  # resumable: a moved text resumes from where it is now (its sha256 is checked)
        "shakespeare", "'shakespeare' (built in), a text file, folder or URL", group="data", resumable=True
    )
    encoding: str = setting("utf-8", "text encoding of --data, e.g. latin-1", group="data")
    seq_len: int = setting(100, "characters per training window", ge=1, group="data")
    batch_size: int = setting(64, "windows per batch", ge=1, group="data")
    seq_len_warmup: int = setting(
        0,
        "curriculum: grow the windows from 8 chars to --seq-len over the first N steps (0: off)",
        ge=0,
        group="data",
    )
    batching: str = setting(
        "windows",
        "windows: shuffled chunks (tutorial); stream: contiguous streams carrying the state; "
        "random: windows starting anywhere, drawn afresh each batch",
        choices=BATCHINGS,
        group="data",
    )
    init_from: str | None = setting(
        None,
        "start from this model's weights (a run folder or a model folder): its shape and vocabulary, "
        "this run's text and training settings",
        group="model",
    )
    extend_vocab: bool = setting(
        False,
        "with --init-from: add the characters of --data the model lacks (their rows start as a fresh "
        "model's; the others are kept as they are)",
        group="model",
    )
    epochs: int | None = setting(
        None,
        "passes over the training text",
        ge=1,
        shown_default="10 unless --max-steps or --time-budget",
        exclusive="stop",
        resumable=True,
        group="optimisation",
    )
    max_steps: int | None = setting(
        None,
        "stop after this many optimizer steps",
        ge=1,
        exclusive="stop",
        resumable=True,
        group="optimisation",
    )
    time_budget: float | None = setting(
        None,
        "stop after this much training time, e.g. 90s, 10m, 2h",
        gt=0,
        parse=parse_duration,
        resumable=True,
        group="optimisation",
    )
    lr: float = setting(
        1e-3, "learning rate (Adam)", gt=0, le=MAX_LR, hint="Adam likes 1e-4 to 1e-2", group="optimisation"
    )
    schedule: str = setting("constant", "learning-rate schedule", choices=SCHEDULES, group="optimisation")
    warmup: int = setting(0, "steps of linear learning-rate warm-up", ge=0, group="optimisation")
    clip: float | None = setting(
        None,
        "max gradient norm, 0 for none",
        ge=0,
        shown_default="5.0 with --batching stream, else 0",
        group="optimisation",
    )
    weight_decay: float = setting(0.0, "AdamW weight decay", ge=0, group="optimisation")
    scheduled_sampling: float = setting(
        0.0,
        "curriculum: feed the model its own sampled char instead of the true one with a chance rising "
        "from 0 to this over the run (0: off)",
        ge=0,
        lt=1,
        group="optimisation",
    )
    val_fraction: float = setting(
        0.1, "last fraction of the text kept for validation", ge=0, lt=1, group="data"
    )
    eval_every: int = setting(
        0, "also validate every N steps, 0 for per epoch only", ge=0, resumable=True, group="run"
    )
    save_every: int = setting(
        0, "also checkpoint every N steps, 0 for per epoch only", ge=0, resumable=True, group="run"
    )
    keep: int = setting(
        3, "newest checkpoints to keep (the best is always kept)", ge=1, resumable=True, group="run"
    )
    log_every: int = setting(100, "print the mean loss every N steps", ge=1, resumable=True, group="run")
    # NumPy's range: training seeds NumPy too (data order), which takes no more
    seed: int = setting(
        42, "seed for weights, data order and dropout", group="optimisation", ge=0, le=2**32 - 1
    )
    device: str = _device(
        "auto", "where to train (auto: CUDA when visible, else the CPU)", resumable=True, group="run"
    )
    precision: str = setting(
        "auto",
        "compute dtype; auto: bf16 where the hardware has it natively, else fp32",
        choices=COMPUTE_DTYPES,
        group="run",
    )
    lstm_kernel: str = setting(
        _from_environment("CHARNN_LSTM_KERNEL", "auto", one_of(*LSTM_KERNELS, *OLD_LSTM_KERNELS)),
        "bf16 LSTM training on a CPU: pytorch (PyTorch's fused kernel), charnn-bf16 (charnn's own layer), "
        "or auto: of those whose bf16 gradients pass a check against fp32 here, the faster at these sizes",
        choices=LSTM_KERNELS,
        old_values=tuple(OLD_LSTM_KERNELS.items()),
        shown_default="auto, or $CHARNN_LSTM_KERNEL",
        group="run",
    )
    dist_timeout: float = setting(
        _from_environment("CHARNN_DIST_TIMEOUT", 120.0, parse_duration),
        "under torchrun: how long a process waits for the others before giving up",
        gt=0,
        le=7 * 86400.0,
        parse=parse_duration,
        resumable=True,
        shown_default="120s, or $CHARNN_DIST_TIMEOUT",
        group="run",
    )

    def __post_init__(self) -> None:
        if self.extend_vocab and self.init_from is None:
            raise ConfigError("--extend-vocab needs --init-from (the model whose vocabulary it extends)")
        if self.clip is None:  # frozen: fill in the batching-dependent default once, so it is recorded
            object.__setattr__(self, "clip", 5.0 if self.batching == "stream" else 0.0)
        settle(self)

    @property
    def epoch_limit(self) -> int | None:
        """Epochs to run: --epochs, else 10 when no other stopping point is given, else no limit."""
        if self.epochs is not None:
            return self.epochs
        return None if (self.max_steps or self.time_budget) else 10


@dataclass(frozen=True, kw_only=True)
class RunOptions:
    """What `charnn train` does with its run folder (the Python API's train() keywords)."""

    commands: ClassVar = ("train",)
    preset: str | None = setting(
        None,
        "named settings; flags given beside it override its values (on --resume: the run's own)",
        shown_default="seed",
        group="model",
    )
    out: str | None = setting(None, "run folder", shown_default="runs/PRESET-DATE-TIME", group="run")
    resume: bool = setting(False, "continue the run in --out from its newest checkpoint", group="run")
    overwrite: bool = setting(False, "replace a run already in --out", group="run")
    quiet: bool = setting(False, "no progress bar or log lines (warnings still show)", group="run")


@dataclass(frozen=True, kw_only=True)
class SamplingConfig:
    """What to generate: the start string and how to pick each next character."""

    commands: ClassVar = ("generate", "http")
    start: str = setting(
        "",
        "text to start from (empty: start of a line); write --start=TEXT when TEXT begins with -",
        shown_default="empty",
    )
    length: int = setting(1000, "characters to generate", ge=0, le=MAX_LENGTH)
    temperature: float = setting(
        TEMPERATURE,
        "below 1: safer text; above 1: wilder (at 1,000 every char is about as likely)",
        ge=1e-6,
        le=1_000,
        hint="--greedy picks the most likely char",
    )
    top_k: int | None = setting(None, "sample only among the k most likely chars", ge=1)
    top_p: float | None = setting(None, "sample only among the most likely chars adding up to p", gt=0, le=1)
    greedy: bool = setting(False, "always take the most likely char (the temperature does not matter)")
    num_samples: int = setting(
        1, "samples generated together, printed one after another", ge=1, le=MAX_SAMPLES
    )
    seed: int | None = setting(None, "same seed, same text", shown_default="random", **SEED_BOUNDS)
    skip_unknown: bool = setting(False, "drop start characters the model never saw")

    def __post_init__(self) -> None:
        settle(self, skip=("temperature",) if self.greedy and type(self.temperature) in (int, float) else ())
        if self.num_samples * self.length > MAX_TOTAL_CHARS:
            raise ConfigError(
                f"--num-samples x --length asks for {self.num_samples * self.length:,} chars; "
                f"at most {MAX_TOTAL_CHARS:,} at once"
            )


@dataclass(frozen=True, kw_only=True)
class GenerateConfig:
    """How `charnn generate` runs the model."""

    commands: ClassVar = ("generate",)
    device: str = _device("cpu")
    weights: str = _weights("auto", ("auto", *WEIGHT_FORMATS))
    verify: bool = setting(True, "load weights whose sha256 does not match config.json", commands=READERS)

    def __post_init__(self) -> None:
        settle(self)


@dataclass(frozen=True, kw_only=True)
class EvaluateConfig:
    """What `charnn evaluate` measures the loss on, and with which weights."""

    commands: ClassVar = ("evaluate",)
    data: str | None = setting(None, "text to evaluate on", shown_default="the model's training text")
    split: str = setting("val", "which part of the text", choices=SPLITS)
    device: str = _device("cpu")
    weights: str = _weights("fp32", WEIGHT_FORMATS, "to compute the loss with")

    def __post_init__(self) -> None:
        settle(self)


@dataclass(frozen=True, kw_only=True)
class ServeConfig:
    """Where `charnn serve` listens and what one server allows; the defaults suit a laptop shared by a few."""

    commands: ClassVar = ("serve",)
    host: str = setting("127.0.0.1", "address to listen on (0.0.0.0 opens it to the network)")
    port: int = setting(8000, "port to listen on", ge=1, le=65535)
    weights: str = _weights("auto", ("auto", *WEIGHT_FORMATS))
    max_length: int = setting(5000, "longest generation one request may ask for", ge=1, le=MAX_LENGTH)
    max_samples: int = setting(16, "most samples one request may ask for", ge=1, le=MAX_SAMPLES)
    timeout: float = setting(60.0, "seconds one request may generate for", gt=0)
    max_streams: int | None = setting(
        None,
        "requests generating at once, batched; more get 503",
        ge=1,
        shown_default=f"{STREAMS_PER_CORE} per core",
    )
    max_running: int | None = setting(None, "older flag: the capacity is it plus --max-waiting", ge=1)
    max_waiting: int | None = setting(None, "older flag: the capacity is it plus --max-running", ge=0)
    stall_timeout: float = setting(10.0, "seconds a client may not read before its stream is dropped", gt=0)
    stream_buffer: int = setting(1000, "chars held for a client that is not reading", ge=1, flag=False)
    max_start: int = setting(2000, "longest start string one request may send", ge=0, flag=False)
    max_body_bytes: int = setting(16 * 1024, "largest request body", ge=1, flag=False)

    def __post_init__(self) -> None:
        settle(self)


SETTINGS_CLASSES = (
    RunOptions,
    ModelConfig,
    TrainConfig,
    SamplingConfig,
    GenerateConfig,
    EvaluateConfig,
    ServeConfig,
    ExportConfig,
    CopyingConfig,
    InspectConfig,
)


def command_settings(command: str) -> list[Declared]:
    """The declared settings a command (or "http") takes, as flags or fields, in declaration order."""
    return [d for cls in SETTINGS_CLASSES for d in declared(cls) if d.takes(command, cls.commands)]
