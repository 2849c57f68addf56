"""Generating text: feed a start string, then sample one character at a time carrying the state."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from charnn.errors import ConfigError
from charnn.nn.model import CharRNN
from charnn.nn.stepper import StepModel
from charnn.text.vocab import Vocab

MAX_LENGTH = 1_000_000
MAX_SAMPLES = 1024
MAX_TOTAL_CHARS = 10_000_000
DEFAULT_START = "\n"


@dataclass(frozen=True)
class SamplingConfig:
    """How to pick each next character."""

    length: int = 1000
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    greedy: bool = False
    num_samples: int = 1
    seed: int | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.length <= MAX_LENGTH:
            raise ConfigError(f"--length must be between 0 and {MAX_LENGTH:,}, got {self.length}")
        if not self.greedy and not (self.temperature > 0 and math.isfinite(self.temperature)):
            raise ConfigError(
                f"--temperature must be a positive number, got {self.temperature} "
                "(--greedy picks the most likely char)"
            )
        if self.top_k is not None and self.top_k < 1:
            raise ConfigError(f"--top-k must be at least 1, got {self.top_k}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ConfigError(f"--top-p must be in (0, 1], got {self.top_p}")
        if not 1 <= self.num_samples <= MAX_SAMPLES:
            raise ConfigError(f"--num-samples must be between 1 and {MAX_SAMPLES}, got {self.num_samples}")
        if self.num_samples * self.length > MAX_TOTAL_CHARS:
            raise ConfigError(
                f"--num-samples x --length asks for {self.num_samples * self.length:,} chars; "
                f"at most {MAX_TOTAL_CHARS:,} at once"
            )


def filter_logits(logits: Tensor, cfg: SamplingConfig) -> Tensor:
    """Scale by temperature and mask everything outside top-k / the top-p nucleus with -inf."""
    logits = logits.float() / cfg.temperature
    if cfg.top_k is not None and cfg.top_k < logits.shape[-1]:
        kth = torch.topk(logits, cfg.top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, -math.inf)
    if cfg.top_p is not None and cfg.top_p < 1:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        # Drop a char when the chars ranked above it already reach top_p; the first always stays.
        drop_sorted = probs.cumsum(dim=-1) - probs >= cfg.top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, -math.inf)
    return logits


def pick(logits: Tensor, cfg: SamplingConfig, generator: torch.Generator) -> Tensor:
    """Next ids (N,) from last-step logits (N, V)."""
    if cfg.greedy:
        return logits.argmax(dim=-1)
    probs = torch.softmax(filter_logits(logits, cfg), dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def clean_start(vocab: Vocab, start: str, skip_unknown: bool) -> str:
    """The start string, without the characters the model never saw when `skip_unknown`."""
    if not skip_unknown:
        return start
    unknown = set(vocab.unknown(start))
    return "".join(c for c in start if c not in unknown)


def start_ids(vocab: Vocab, start: str) -> list[int]:
    """Ids of the start string; an empty start means a newline (the start of a line)."""
    if not start:
        if DEFAULT_START not in vocab.chars:
            raise ConfigError(
                "the start string is empty and the vocabulary has no newline; give --start TEXT"
            )
        start = DEFAULT_START
    unknown = vocab.unknown(start)
    if unknown:
        shown = " ".join(repr(c) for c in unknown[:20])
        raise ConfigError(
            f"--start holds characters the model never saw: {shown}; remove them or pass --skip-unknown"
        )
    return vocab.encode(start).tolist()


@torch.no_grad()
def sample(
    model: CharRNN, vocab: Vocab, start: str, cfg: SamplingConfig, weights: str | None = "fp32"
) -> Iterator[list[str]]:
    """Yield, per step, the next char of each of the `cfg.num_samples` samples, generated as one batch.

    The start string goes through the model in one call; then each step runs on a StepModel holding the
    weights in format `weights` (None: the model itself, one call per char, the slow reference path).
    """
    model.eval()
    device = model.device
    generator = torch.Generator()
    generator.manual_seed(cfg.seed if cfg.seed is not None else torch.seed())
    ids = torch.tensor([start_ids(vocab, start)], device=device).repeat(cfg.num_samples, 1)
    logits, state = model(ids)
    logits = logits[:, -1]
    stepper = StepModel(model, weights) if weights else None
    for i in range(cfg.length):
        nxt = pick(logits.cpu(), cfg, generator)
        yield [vocab.chars[c] for c in nxt.tolist()]
        if i + 1 == cfg.length:
            break
        if stepper:
            logits, state = stepper.step(nxt.to(device), state)
        else:
            logits, state = model(nxt.unsqueeze(1).to(device), state)
            logits = logits[:, -1]
