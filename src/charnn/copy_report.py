"""`charnn copying`: how much of what a model writes is copied from its training text, beside the same
figures for as much held-out validation text (which the model never saw), as a calibration."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from charnn.config import CopyingConfig, SamplingConfig
from charnn.declare import build
from charnn.errors import DataError
from charnn.sampling import default_start, sample
from charnn.store.model_dir import LoadedModel, as_loaded
from charnn.text.copying import CopyFigures, Locator, figures, span_lengths
from charnn.text.corpus import Corpus, split, training_text
from charnn.text.files import read_given_text
from charnn.text.suffix_index import SuffixIndex, load_index
from charnn.text.vocab import Vocab


def training_index(loaded: LoadedModel, data: str | None = None) -> tuple[Corpus, SuffixIndex, np.ndarray]:
    """The model's training text, the suffix index of its training part, and its validation part."""
    training = loaded.info.get("training", {})
    corpus = training_text(training, data, loaded.vocab, loaded.path)
    train_ids, val_ids = split(corpus.ids, training.get("val_fraction", 0.1))
    return corpus, load_index(train_ids, f"{corpus.sha256}:{len(train_ids)}", corpus.vocab.chars), val_ids


def read_texts(source: str, encoding: str = "utf-8") -> list[str]:
    """The text of FILE, or of stdin for '-', in the encoding the model's training text was read in."""
    try:
        text = read_given_text(source, encoding)
    except DataError as e:
        if str(e).endswith("no such file"):  # literal text given where a file is read, as `inspect --text`
            raise DataError(f"{e}; --file (or --text) names the file to check, '-' for stdin") from None
        raise
    if not text:
        raise DataError(f"{source}: the text is empty; nothing to check")
    return [text]


def encode_known(vocab: Vocab, text: str, what: str) -> np.ndarray:
    """Ids of `text`, or DataError naming the characters the model's vocabulary lacks."""
    unknown = vocab.unknown(text)
    if unknown:
        shown = " ".join(repr(c) for c in unknown[:20])
        raise DataError(f"{what} holds characters the model never saw: {shown}")
    return vocab.encode(text)


def copying_report(model: str | Path | LoadedModel, verify: bool = True, **settings: object) -> dict:
    """Copying figures of generated samples (or a given text) and of equal validation text, as one dict.

    `settings`: CopyingConfig's (data, file, samples, length, temperature, seed, spans); `verify` checks
    the weights' sha256, as `load` does."""
    cfg = build(CopyingConfig, settings)
    spans = span_lengths(cfg.spans)
    loaded = as_loaded(model, verify=verify)
    encoding = loaded.info.get("training", {}).get("encoding") or "utf-8"
    given = read_texts(cfg.file, encoding) if cfg.file else None
    corpus, index, val_ids = training_index(loaded, cfg.data)  # refused here, before any sampling
    if not len(val_ids):
        raise DataError(_NO_VALIDATION)
    texts = given or _samples(loaded, cfg)
    pieces = [encode_known(loaded.vocab, t, cfg.file or "the sample") for t in texts]
    where = Locator(corpus, encoding)
    checked = figures(pieces, index, spans)
    calibration = figures(_cut_like(val_ids, pieces), index, spans)
    label = "stdin" if cfg.file == "-" else cfg.file
    return {
        "data": corpus.source,
        "training_chars": len(index),
        "what": label if cfg.file else f"{_count(cfg.samples, 'sample')} of {_count(cfg.length, 'char')}",
        "checked": _with_place(checked, where, texts),
        "validation": _with_place(calibration, where, None),
        "verdict": verdict(checked, calibration, spans[0]),
    }


_NO_VALIDATION = "the model was trained without validation text (--val-fraction 0); nothing to compare"


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def _samples(loaded: LoadedModel, cfg: CopyingConfig) -> list[str]:
    """The samples to check, each begun after a newline, or where the vocabulary has none (a text of one
    line) after its first char (sampling.default_start)."""
    start = default_start(loaded.vocab)
    sampling = SamplingConfig(
        start=start, length=cfg.length, num_samples=cfg.samples, seed=cfg.seed, temperature=cfg.temperature
    )
    parts: list[list[str]] = [[] for _ in range(cfg.samples)]
    for step in sample(loaded.model, loaded.vocab, sampling):
        for part, c in zip(parts, step, strict=True):
            part.append(c)
    return ["".join(p) for p in parts]


def _cut_like(ids: np.ndarray, pieces: list[np.ndarray]) -> list[np.ndarray]:
    """As many chars of `ids` as the pieces hold, cut into pieces of the same lengths (fewer where short)."""
    out, at = [], 0
    for p in pieces:
        if at >= len(ids):
            break
        out.append(np.asarray(ids[at : at + len(p)]))
        at += len(p)
    return out


def _with_place(f: CopyFigures, where: Locator, texts: list[str] | None) -> dict:
    """The figures as a dict, the longest span with its file and line (and its text, when short)."""
    out = f.to_dict()
    if f.longest.length:
        name, line = where(f.longest.source)
        out["longest"].update({"file": name, "line": line})
        if texts is not None:
            joined = "".join(texts)
            out["longest"]["text"] = joined[f.longest.start : f.longest.start + min(f.longest.length, 200)]
    return out


def verdict(checked: CopyFigures, calibration: CopyFigures, k: int) -> str:
    """One sentence comparing the checked text's copying with unseen text's, at span length k."""
    mine, base = checked.copied_share[k], calibration.copied_share[k]
    if mine <= base:
        how = "no more than unseen text does"
    elif mine <= base * 1.5 + 0.005:
        how = "about as much as unseen text does"
    else:
        how = f"{mine / base:.1f}x as much as unseen text" if base else "where unseen text copies nothing"
    return (
        f"{mine:.1%} of the chars lie in copied spans of {k}+ chars against {base:.1%} of unseen text: {how}"
    )


def format_report(report: dict) -> str:
    """The report as a few lines of text."""
    lines = [f"copying against {report['data']} ({report['training_chars']:,} training chars)"]
    for label, key in ((report["what"], "checked"), ("validation text (never seen)", "validation")):
        f = report[key]
        longest = f["longest"]
        place = f" at {longest['file']} line {longest['line']}" if "file" in longest else ""
        shares = ", ".join(f"{v:.1%} in {k}+" for k, v in f["copied_share"].items())
        novel = ", ".join(f"{v:.1%} of {n}-grams" for n, v in f["novel_ngrams"].items() if v is not None)
        novel = novel or "n/a (shorter than the n-grams)"
        lines.append(f"{label}: {f['chars']:,} chars")
        lines.append(f"  longest copied span {longest['length']} chars{place}")
        lines.append(f"  copied: {shares}; novel: {novel}")
        if "text" in longest:
            lines.append(f"  longest span: {longest['text']!r}")
    lines.append(report["verdict"])
    return "\n".join(lines)
