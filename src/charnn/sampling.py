"""Generating text: feed a start string, then sample one character at a time carrying the state."""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch import Tensor

from charnn.config import SamplingConfig
from charnn.errors import NOT_FINITE, ConfigError, ModelFileError
from charnn.nn.model import CharRNN, eval_mode
from charnn.nn.stepper import StepModel
from charnn.text.vocab import Vocab

DEFAULT_START = "\n"


def filter_logits(logits: Tensor, cfg: SamplingConfig) -> Tensor:
    """Scale by temperature and mask everything outside top-k / the top-p nucleus with -inf."""
    logits = logits.float() / cfg.temperature
    if cfg.top_k is not None and cfg.top_k < logits.shape[-1]:
        kth = torch.topk(logits, cfg.top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, -math.inf)
    if cfg.top_p is not None and cfg.top_p < 1:
        logits = logits.masked_fill(_outside_nucleus(logits, cfg.top_p), -math.inf)
    return logits


def _outside_nucleus(logits: Tensor, top_p: float | Tensor) -> Tensor:
    """Where a char falls outside the top-p nucleus (`top_p` a number, or one per row as (N, 1)): the chars
    ranked above it already reach top_p. The first always stays, even where top_p is below float32's
    smallest number."""
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    probs = torch.softmax(sorted_logits, dim=-1)
    drop_sorted = probs.cumsum(dim=-1) - probs >= top_p
    drop_sorted[..., 0] = False
    return torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)


def pick(logits: Tensor, cfg: SamplingConfig, generator: torch.Generator) -> Tensor:
    """Next ids (N,) from last-step logits (N, V). A draw is `torch.multinomial`'s own (argmax of probs /
    Exp(1) noise from `generator`: the same draws) without its checks of the probabilities, which cost as
    much as the rest of the pick; the one that matters, finite outputs, is made here."""
    check_finite(logits)
    if cfg.greedy:
        return logits.argmax(dim=-1)
    probs = torch.softmax(filter_logits(logits, cfg), dim=-1)
    return (probs / draw_noise(generator, *probs.shape)).argmax(dim=-1)


def check_finite(logits: Tensor) -> None:
    """Refuse (ModelFileError) logits holding NaN or inf: a broken model would otherwise sample garbage."""
    # any NaN or inf makes the sum so (cheaper than isfinite); in float64, finite logits never overflow it
    if not math.isfinite(float(logits.sum(dtype=torch.float64))):
        raise ModelFileError(NOT_FINITE)


def default_start(vocab: Vocab) -> str:
    """Where a start must be had without one given: a newline (the start of a line), else, for a model of
    text without newlines, its vocabulary's first char."""
    return DEFAULT_START if DEFAULT_START in vocab.chars else vocab.chars[0]


def start_text(vocab: Vocab, cfg: SamplingConfig) -> str:
    """The start string as it will be used: without the characters the model never saw when skip_unknown,
    else refused (ConfigError) when it holds any."""
    start = cfg.start
    if cfg.skip_unknown:
        unknown = set(vocab.unknown(start))
        start = "".join(c for c in start if c not in unknown)
        if cfg.start and not start and DEFAULT_START not in vocab.chars:  # nowhere else to start
            raise ConfigError("--skip-unknown dropped every char of --start; give a --start the model knows")
    start_ids(vocab, start)
    return start


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


# Start chars over all samples beyond which the start is fed once, FEED_CHARS at a time, and its state copied
# to every sample: the memory of one piece (a long start for 1,024 samples would else take tens of GB).
FEED_CHARS = 65_536


def feed_start(model: CharRNN, ids: list[int], rows: int) -> tuple[Tensor, tuple[Tensor, ...]]:
    """The last logits (rows, V) and the state after the start `ids`, for `rows` samples.

    Up to FEED_CHARS chars in all, one call over every row (how the seeded texts were recorded); beyond,
    one row in pieces, the same start for all."""
    device = model.device
    if rows * len(ids) <= FEED_CHARS:
        logits, state = model(torch.tensor([ids], device=device).repeat(rows, 1))
        return logits[:, -1], state
    state = None
    for at in range(0, len(ids), FEED_CHARS):
        logits, state = model(torch.tensor([ids[at : at + FEED_CHARS]], device=device), state)
    return logits[:, -1].repeat(rows, 1), tuple(s.repeat(1, rows, 1) for s in state)


@torch.no_grad()
def sample(
    model: CharRNN, vocab: Vocab, cfg: SamplingConfig, weights: str | None = "fp32", start: str | None = None
) -> Iterator[list[str]]:
    """Yield, per step, the next char of each of the `cfg.num_samples` samples, generated as one batch.

    The start string (`start` as `start_text` worked it out, else worked out here) goes through the model in
    one call; then each step runs on a StepModel holding the weights in format `weights` (None: the model
    itself, one call per char, the slow reference path).
    """
    with eval_mode(model):
        device = model.device
        generator = seeded(cfg.seed)
        start = start_text(vocab, cfg) if start is None else start
        logits, state = feed_start(model, start_ids(vocab, start), cfg.num_samples)
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


def pick_rows(
    logits: Tensor, temperature: Tensor, top_k: Tensor, top_p: Tensor, greedy: Tensor, noise: Tensor
) -> Tensor:
    """Next ids (N,) for rows that each have their own settings, each row exactly as `pick` would choose it.

    temperature, top_p (N,) float (top_p above 1: none), top_k (N,) long (V or more: none), greedy (N,)
    bool. noise (N, V): each row's Exp(1) draws from its own generator, `torch.multinomial`'s own method
    (argmax of probs / noise), so a row draws the same numbers alone or in any batch.
    """
    scaled = logits.float() / temperature[:, None]
    vocab = logits.shape[-1]
    if bool((top_k < vocab).any()):
        ranked = torch.sort(scaled, dim=-1, descending=True).values
        kth = ranked.gather(1, (top_k.clamp(max=vocab) - 1)[:, None])
        scaled = scaled.masked_fill(scaled < kth, -math.inf)
    if bool((top_p < 1).any()):
        scaled = scaled.masked_fill(_outside_nucleus(scaled, top_p[:, None]), -math.inf)
    sampled = (torch.softmax(scaled, dim=-1) / noise).argmax(dim=-1)
    return torch.where(greedy, logits.argmax(dim=-1), sampled)


def seeded(seed: int | None) -> torch.Generator:
    """A generator of its own: seeded with `seed`, or where None from the system's randomness (never by
    reseeding torch's global generator, which a program using charnn may have seeded itself)."""
    generator = torch.Generator()
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(seed)
    return generator


def draw_noise(generator: torch.Generator | None, rows: int, vocab: int) -> Tensor:
    """The Exp(1) draws `torch.multinomial` makes for `rows` rows (none for greedy rows: `generator` None)."""
    if generator is None:
        return torch.ones(rows, vocab)
    return torch.empty(rows, vocab).exponential_(generator=generator)
