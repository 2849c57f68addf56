"""The named presets, each with what it reached and where; and how a run's settings are put together from a
preset (or a saved run) and the settings given beside it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from types import MappingProxyType
from typing import Any

from charnn.config import ModelConfig, TrainConfig
from charnn.declare import check_exclusive, declared
from charnn.errors import ConfigError

_ZEN5 = "AMD EPYC with AVX-512 bf16, 2 cores, torch 2.13.0"
_AMX = "Intel Xeon with AMX, 2 cores, torch 2.13.0"


@dataclass(frozen=True)
class Variant:
    """Settings a preset takes on one kind of CPU (device.cpu_kind) because they measured better there."""

    why: str
    measured: str
    settings: MappingProxyType


@dataclass(frozen=True)
class Preset:
    """Settings that replace the tutorial's defaults, what they are for, and the figure they reached."""

    help: str
    measured: str  # the exact validation loss on tiny Shakespeare (state carried), the time, and the machine
    settings: MappingProxyType
    by_cpu: MappingProxyType = field(default_factory=lambda: MappingProxyType({}))  # CPU kind -> Variant

    def settings_on(self, kind: str) -> dict:
        """The settings on this kind of CPU: the variant's on top of the preset's where it has one."""
        variant = self.by_cpu.get(kind)
        return {**self.settings, **(variant.settings if variant else {})}


def _preset(help: str, measured: str, by_cpu: dict | None = None, **settings: Any) -> Preset:
    return Preset(help, measured, MappingProxyType(settings), MappingProxyType(by_cpu or {}))


def _on_amx(why: str, measured: str, **settings: Any) -> dict:
    return {"amx": Variant(why, measured, MappingProxyType(settings))}


_LSTM_ON_AMX = (
    "as on AMX a bf16 LSTM at 512 units runs 16-25% more steps than the GRU in the same time and reaches a "
    "lower loss, and with its dropout compiled it runs enough steps to overfit unless its weights decay and "
    "its recurrent weights drop (1.4367 at weight decay 0.01, 1.4212 without the weight dropout)"
)

_WIDER_LSTM_ON_AMX = (
    "as on AMX a bf16 LSTM runs more steps than the GRU in the same time, and in 10 minutes a wider one "
    "overfits less with more dropout, weight decay and its recurrent weights dropped, which lets a higher "
    "rate pay (2 x 512: 1.4303; without the weight dropout and at AdamW 3e-3, 1.3984-1.4111)"
)

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

CATALOGUE: dict[str, Preset] = {
    "seed": _preset(
        "the tutorial's model and loop: LSTM 1024, embedding 256, windows of 100, batch 64, 10 epochs",
        f"1.4802 in 503 s ({_ZEN5}, 2026-12-01)",
    ),
    "tiny": _preset(
        "LSTM 128, 2000 steps: a model in well under a minute, for tests and demos",
        f"1.7865 in 8 s ({_ZEN5}, 2026-11-25)",
        embedding=32,
        hidden=128,
        seq_len=64,
        batch_size=32,
        lr=5e-3,
        schedule="cosine",
        warmup=20,
        clip=1.0,
        max_steps=2000,
    ),
    "small": _preset(
        "LSTM 512, embedding 64, 1000 steps, cosine LR: Shakespeare-like text in ~2 min on 2 cores",
        f"1.6098 in 99 s ({_ZEN5}, 2026-11-25)",
        embedding=64,
        hidden=512,
        seq_len=100,
        batch_size=64,
        lr=3e-3,
        schedule="cosine",
        warmup=50,
        clip=1.0,
        max_steps=1000,
    ),
    "cpu-5m": _preset(
        "2 x GRU 512, 128 streams of 64-char windows, dropout, AdamW 5e-3, cosine sized to 5 minutes",
        f"1.4399 in 300 s ({_ZEN5}, 2026-11-25)",
        by_cpu=_on_amx(
            _LSTM_ON_AMX,
            f"1.4009 and 1.4030 in 300 s, two runs ({_AMX}, 2026-12-07)",
            cell="lstm",
            weight_decay=0.3,
            weight_dropout=0.2,
        ),
        **{**_CPU_BUDGET, "lr": 5e-3, "time_budget": 300.0},
    ),
    "cpu-10m": _preset(
        "the cpu-5m recipe with more dropout and AdamW 3e-3, cosine sized to 10 minutes",
        f"1.4384 in 600 s ({_ZEN5}, 2026-11-25)",
        by_cpu=_on_amx(
            _WIDER_LSTM_ON_AMX,
            f"1.3896 and 1.3956 in 600 s, two runs ({_AMX}, 2026-12-07)",
            cell="lstm",
            hidden=768,
            dropout=0.5,
            weight_decay=0.3,
            weight_dropout=0.2,
            lr=4e-3,
        ),
        **{**_CPU_BUDGET, "dropout": 0.2, "time_budget": 600.0},
    ),
    "gpu": _preset(
        "3 x LSTM 1024 for a CUDA GPU, 5,000 steps of 128 x 256 chars (not yet measured)",
        "not measured yet (no GPU was available)",
        layers=3,
        hidden=1024,
        embedding=128,
        dropout=0.3,
        seq_len=256,
        batch_size=128,
        batching="random",
        lr=2e-3,
        warmup=200,
        schedule="cosine",
        weight_decay=0.01,
        clip=1.0,
        max_steps=5000,
        device="cuda",
    ),
}
PRESETS: dict[str, dict] = {name: dict(p.settings) for name, p in CATALOGUE.items()}

MODEL_FIELDS = frozenset(f.name for f in fields(ModelConfig)) - {"vocab_size"}
TRAIN_FIELDS = frozenset(f.name for f in fields(TrainConfig))
# Settings a resumed run may change: they decide when to stop or how to report, not what is learnt.
RESUMABLE = frozenset(d.name for d in declared(TrainConfig) if d.how.resumable)


def describe_presets() -> str:
    """The presets for `charnn train --help`: each with what it is, what it reached and where, and its
    settings on the kinds of CPU that have their own."""
    lines = []
    for name, preset in CATALOGUE.items():
        lines += [f"  {name:<8} {preset.help}", f"  {'':<8}   {_reached(preset.measured)}"]
        for kind, variant in preset.by_cpu.items():
            lines.append(f"  {'':<8}   on {kind} CPUs: {_listed(variant.settings)}")
            lines.append(f"  {'':<8}     {_reached(variant.measured)}")
    return "\n".join(lines)


def _reached(measured: str) -> str:
    return f"reached {measured}" if measured[:1].isdigit() else measured


def variant_note(preset: str, kind: str, overrides: dict) -> str:
    """A line saying which settings a preset takes on this kind of CPU and why; "" where it has no variant
    here (or every setting it changes was given)."""
    variant = CATALOGUE[preset].by_cpu.get(kind)
    if variant is None:
        return ""
    taken = {k: v for k, v in variant.settings.items() if overrides.get(k) is None}
    if not taken:
        return ""
    return f"preset {preset} on this CPU ({kind}): {_listed(taken)}, {variant.why}: {variant.measured}"


def _listed(settings: Mapping) -> str:
    return ", ".join(f"{k} {v}" for k, v in settings.items())


STOP_SETTINGS = ("epochs", "max_steps", "time_budget")


def settings_for(
    preset: str, overrides: dict, base: dict | None = None, kind: str = ""
) -> tuple[dict, TrainConfig]:
    """Model settings (without the vocabulary size) and TrainConfig: a preset's (its variant for the CPU
    kind `kind`, where it has one) or a saved run's `base`, with the given `overrides` on top; None in
    `overrides` means not given."""
    if preset not in CATALOGUE:
        raise ConfigError(f"unknown preset {preset!r}; choose one of {', '.join(CATALOGUE)}")
    given = {k: v for k, v in overrides.items() if v is not None}
    unknown = sorted(set(given) - MODEL_FIELDS - TRAIN_FIELDS)
    if unknown:
        raise ConfigError(f"unknown settings: {', '.join(unknown)}")
    check_exclusive(TrainConfig, given)
    if base is None:
        base = CATALOGUE[preset].settings_on(kind)
    if any(k in given for k in STOP_SETTINGS):  # a stop setting given replaces all of the preset's
        base = {k: v for k, v in base.items() if k not in STOP_SETTINGS}
    merged = {**base, **given}
    model = {k: v for k, v in merged.items() if k in MODEL_FIELDS}
    ModelConfig(**model)  # checked early, before any data is read
    return model, TrainConfig(**{k: v for k, v in merged.items() if k in TRAIN_FIELDS})


def resume_settings(saved: dict, overrides: dict, preset: str | None = None) -> tuple[str, dict, TrainConfig]:
    """A resumed run's preset and settings: the saved ones; only when to stop and how to report may change.
    A stop setting given replaces every saved one (--epochs 3 after --max-steps 20 trains 3 epochs)."""
    missing = [k for k in ("preset", "model", "train") if k not in saved]
    if missing:
        raise KeyError(f"no {' or '.join(missing)} entry")
    if not isinstance(saved["model"], dict) or not isinstance(saved["train"], dict):
        raise ValueError("its model and train entries are not objects")
    saved_preset = saved["preset"]
    if preset is not None and preset != saved_preset:
        raise ConfigError(f"cannot resume with --preset {preset}: the run was started with {saved_preset}")
    base = {**saved["model"], **saved["train"]}
    base.pop("vocab_size", None)
    given = {k: v for k, v in overrides.items() if v is not None}
    changed = sorted(k for k, v in given.items() if k not in RESUMABLE and base.get(k, v) != v)
    if changed:
        diffs = ", ".join(f"{k} {base.get(k)!r} -> {given[k]!r}" for k in changed)
        raise ConfigError(f"cannot resume with different settings ({diffs}); start a new run instead")
    model, cfg = settings_for(saved_preset, given, base)
    return saved_preset, model, cfg


def run_settings(
    model: ModelConfig,
    cfg: TrainConfig,
    preset: str,
    skipped_files: tuple[str, ...],
    init_from: dict | None = None,
) -> dict:
    """What train_args.json holds: every setting used, defaults included, the files of a --data folder that
    were left out, and for a --init-from run the model it started from."""
    return {
        "preset": preset,
        "model": model.to_dict(),
        "train": asdict(cfg),
        "skipped_files": list(skipped_files),
    } | ({"init_from": init_from} if init_from else {})
