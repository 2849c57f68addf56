"""`--init-from MODEL`: a new run that starts from another model's weights (fine-tuning).

The model's shape and vocabulary are the run's; its text and training settings are its own. Characters of the
new text that the model lacks are refused, or with `--extend-vocab` added: the vocabulary stays sorted, so the
model's rows move to their new places unchanged and the new rows keep a fresh model's initial values.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from charnn.config import TrainConfig
from charnn.errors import ConfigError, DataError
from charnn.nn.model import CharRNN
from charnn.store.model_dir import SHIPPED_DIR, LoadedModel, load_model
from charnn.text.corpus import Corpus, load_corpus, with_vocab
from charnn.text.vocab import Vocab

SHAPE = ("cell", "embedding", "hidden", "layers")
ROWS_BY_CHAR = ("embedding.weight", "head.weight", "head.bias")  # one row per vocabulary entry


@dataclass(frozen=True)
class Origin:
    """The model a run starts from (None when resuming: the checkpoint has the weights) and what
    train_args.json and the model folder record of it."""

    loaded: LoadedModel | None
    vocab: Vocab
    record: dict


def start(cfg: TrainConfig, model_settings: dict, given: dict) -> tuple[dict, Origin]:
    """The run's model settings with the shape of --init-from's model, and that model. Shape settings given
    on the command line that disagree with it are refused."""
    # a run cannot start from weights it cannot check: charnn generate --no-verify can still read them
    loaded = load_model(cfg.init_from, advice="copy the model again, or start from another one")
    shape = {k: getattr(loaded.config, k) for k in SHAPE}
    for key, value in shape.items():
        if given.get(key) is not None and given[key] != value:
            flag = "--" + key.replace("_", "-")
            raise ConfigError(
                f"{flag} {given[key]} disagrees with {loaded.path}'s {value}: with --init-from the model's "
                "shape is the run's (leave the shape flags out)"
            )
    training = loaded.info.get("training", {})
    record = {
        "path": str(Path(loaded.path).resolve()) if loaded.path.parent != SHIPPED_DIR else loaded.path.name,
        "weights_sha256": loaded.info.get("weights_sha256"),
        "val_loss": training.get("val_loss"),
        "data": training.get("data"),
    }
    return {**model_settings, **shape}, Origin(loaded, loaded.vocab, record)


def resumed(saved: dict) -> Origin | None:
    """The origin a saved run recorded (its vocabulary), or None for a run trained from scratch."""
    record = saved.get("init_from")
    return Origin(None, Vocab(tuple(record["vocab"])), record) if record else None


def corpus_for(origin: Origin, cfg: TrainConfig, quiet: bool = False) -> Corpus:
    """--data in the model's vocabulary; extended by the characters it lacks where --extend-vocab says so
    (a resumed run uses the vocabulary it recorded)."""
    if origin.loaded is None:
        return load_corpus(cfg.data, cfg.encoding, origin.vocab, quiet)
    own = load_corpus(cfg.data, cfg.encoding, quiet=quiet)
    added = sorted(set(own.vocab.chars) - set(origin.vocab.chars))
    if added and not cfg.extend_vocab:
        shown = " ".join(repr(c) for c in added[:10])
        more = f" and {len(added) - 10} more" if len(added) > 10 else ""
        raise DataError(
            f"{own.source}: {len(added)} characters not in {origin.loaded.path}'s vocabulary: {shown}{more}; "
            "--extend-vocab adds them"
        )
    vocab = Vocab(tuple(sorted(set(origin.vocab.chars) | set(added))))
    origin.record.update(added_chars="".join(added), vocab="".join(vocab.chars))
    return with_vocab(own, vocab)


@torch.no_grad()
def copy_weights(origin: Origin, model: CharRNN, vocab: Vocab) -> None:
    """Put the origin's weights into `model` (built for `vocab`, seeded as a fresh model): every tensor
    copied, the per-character rows to their places in `vocab`; rows of added characters keep their values."""
    rows = torch.tensor([vocab.chars.index(c) for c in origin.vocab.chars])
    state = model.state_dict()
    for name, tensor in origin.loaded.model.state_dict().items():
        target = state[name]
        if name in ROWS_BY_CHAR:
            target[rows] = tensor.to(target.device, target.dtype)
        else:
            target.copy_(tensor)
