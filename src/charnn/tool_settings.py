"""Settings of the commands that carry or look into a trained model: export, copying and inspect.

Declared like config.py's (which re-exports them); kept apart so that each module stays small.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from charnn.declare import SEED_BOUNDS, setting, settle

TEMPERATURE = 1.0  # sampling's default (SamplingConfig's temperature is declared from this too)


@dataclass(frozen=True, kw_only=True)
class ExportConfig:  # what `charnn export` writes, and where
    commands: ClassVar = ("export",)
    format: str = setting(
        "onnx", "onnx: the step graph; web: also a page running it", choices=("onnx", "web")
    )
    out: str | None = setting(None, "folder to write (required)", shown_default="none")
    force: bool = setting(False, "replace what an existing non-empty --out holds")

    def __post_init__(self) -> None:
        settle(self)


@dataclass(frozen=True, kw_only=True)
class CopyingConfig:
    """What `charnn copying` checks against the training text, and how it generates what it checks."""

    commands: ClassVar = ("copying",)
    data: str | None = setting(None, "the training text", shown_default="the model's training text")
    file: str | None = setting(
        None, "check the text of FILE ('-': stdin), not samples", shown_default="none", aliases=("--text",)
    )
    samples: int = setting(10, "samples to generate", ge=1, le=100)
    length: int = setting(1000, "characters per sample", ge=1, le=100_000)
    temperature: float = setting(TEMPERATURE, "sampling temperature", ge=1e-6)
    seed: int = setting(0, "same seed, same samples", **SEED_BOUNDS)
    spans: str = setting("20,50,100", "copied-span lengths k to report, comma-separated")

    def __post_init__(self) -> None:
        settle(self)


@dataclass(frozen=True, kw_only=True)
class InspectConfig:
    """What `charnn inspect` looks at and where the page goes."""

    commands: ClassVar = ("inspect",)
    text: str | None = setting(None, "the text to look inside", shown_default="none")
    file: str | None = setting(None, "read the text from FILE ('-': stdin)", shown_default="none")
    out: str = setting("inspect.html", "the HTML page to write")
    units: int = setting(6, "units shown per layer, best correlated first", ge=1, le=64)

    def __post_init__(self) -> None:
        settle(self)
