"""`--init-from`: a new run starting from another model's weights, its vocabulary kept or extended."""

import json

import pytest
import torch
from safetensors.torch import load_file

import charnn
from charnn.config import ModelConfig, TrainConfig
from charnn.errors import ConfigError, DataError
from charnn.nn.model import CharRNN
from charnn.store.model_dir import load_model
from charnn.text.vocab import Vocab
from charnn.training import init_from, rng
from conftest import TINY, TINY_FLAGS, assert_clean_error, run_cli

ACCENTED = "Été: où ça? Déjà vu, naïve.\n" * 200


@pytest.fixture
def new_text(tmp_path):
    path = tmp_path / "new.txt"
    path.write_text(("Speak, citizen: we are resolved.\n" * 300), encoding="utf-8")
    return path


@pytest.fixture
def accented(tmp_path):
    path = tmp_path / "accented.txt"
    path.write_text(ACCENTED, encoding="utf-8")
    return path


def test_a_run_starts_from_the_model_and_records_where(tmp_path, trained_run, new_text):
    result = charnn.train(
        tmp_path / "ft",
        init_from=str(trained_run),
        data=str(new_text),
        max_steps=3,
        lr=1e-3,
        quiet=True,
        **{k: v for k, v in TINY.items() if k not in ("hidden", "embedding")},
    )
    assert result.steps == 3
    base = load_model(trained_run)
    args = json.loads((tmp_path / "ft/train_args.json").read_text())
    assert args["model"] == base.config.to_dict()
    record = args["init_from"]
    assert record["path"] == str((trained_run / "model").resolve())
    assert record["weights_sha256"] == base.info["weights_sha256"]
    assert record["val_loss"] == base.info["training"]["val_loss"] and record["added_chars"] == ""
    assert args["train"]["init_from"] == str(trained_run) and args["train"]["extend_vocab"] is False
    tuned = load_model(tmp_path / "ft")
    assert tuned.vocab == base.vocab  # the model's vocabulary, not the new text's smaller one
    assert tuned.info["training"]["init_from"] == record
    info = run_cli("info", str(tmp_path / "ft"))
    assert f"init_from: {record['path']}" in info.stdout and "0 chars added" in info.stdout


def test_the_first_step_starts_from_the_models_weights(tmp_path, trained_run, new_text):
    """With a learning rate of almost nothing, the tuned model is the original one."""
    common = {k: v for k, v in TINY.items() if k not in ("hidden", "embedding")}
    charnn.train(
        tmp_path / "ft",
        init_from=str(trained_run),
        data=str(new_text),
        max_steps=1,
        lr=1e-12,
        quiet=True,
        **common,
    )
    before, after = load_file(str(trained_run / "model/model.safetensors")), weights_of(tmp_path / "ft")
    assert before.keys() == after.keys()
    assert all(torch.allclose(before[k], after[k], atol=1e-9) for k in before)


def weights_of(run):
    return load_file(str(run / "model/model.safetensors"))


def test_extending_the_vocabulary_keeps_every_old_row_bit_for_bit(trained_run):
    base = load_model(trained_run)
    added = ("é", "ç", "Ω")
    vocab = Vocab(tuple(sorted(set(base.vocab.chars) | set(added))))
    cfg = ModelConfig(**{**base.config.to_dict(), "vocab_size": len(vocab)})
    rng.seed_all(7)
    model = CharRNN(cfg)
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    origin = init_from.Origin(base, base.vocab, {})
    init_from.copy_weights(origin, model, vocab)
    old, new = base.model.state_dict(), model.state_dict()
    for name in init_from.ROWS_BY_CHAR:
        for i, c in enumerate(base.vocab.chars):
            assert torch.equal(new[name][vocab.chars.index(c)], old[name][i])
        for c in added:
            assert torch.equal(new[name][vocab.chars.index(c)], fresh[name][vocab.chars.index(c)])
    assert all(torch.equal(new[k], old[k]) for k in old if k not in init_from.ROWS_BY_CHAR)


def test_extended_vocabulary_trains_resumes_exactly_and_generates(tmp_path, trained_run, accented):
    common = dict(
        init_from=str(trained_run),
        extend_vocab=True,
        data=str(accented),
        quiet=True,
        batching="stream",
        seq_len=16,
        batch_size=4,
    )
    charnn.train(tmp_path / "straight", max_steps=8, **common)
    charnn.train(tmp_path / "split", max_steps=4, **common)
    charnn.train(tmp_path / "split", resume=True, max_steps=8, quiet=True)
    a = load_file(str(tmp_path / "straight/checkpoints/step-000000008/model.safetensors"))
    b = load_file(str(tmp_path / "split/checkpoints/step-000000008/model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    tuned = charnn.load(tmp_path / "split")
    assert {"D", "j", "É", "à", "ç", "é", "ï", "ù"} <= set(tuned.vocab.chars)
    assert (
        json.loads((tmp_path / "split/train_args.json").read_text())["init_from"]["added_chars"] == "DjÉàçéïù"
    )
    text = charnn.generate(tmp_path / "split", start="Été", length=20, seed=1)
    assert text.startswith("Été") and len(text) == 23
    report = charnn.evaluate(tmp_path / "split", data=str(accented))
    assert report["carried"]["chars"] > 0


def test_characters_the_model_lacks_are_refused_by_name(tmp_path, trained_run, accented):
    with pytest.raises(
        DataError, match=r"8 characters not in .*'D' 'j' 'É' 'à' 'ç' 'é' 'ï' 'ù'; --extend-vocab adds"
    ):
        charnn.train(tmp_path / "ft", init_from=str(trained_run), data=str(accented), max_steps=1, quiet=True)
    assert not (tmp_path / "ft/train_args.json").exists()


def test_bad_combinations_are_refused_with_one_line(tmp_path, trained_run, new_text):
    out = str(tmp_path / "ft")
    r = run_cli("train", "--out", out, "--data", str(new_text), "--extend-vocab", *TINY_FLAGS)
    assert_clean_error(r, "--extend-vocab needs --init-from")
    r = run_cli(
        "train", "--out", out, "--init-from", str(trained_run), "--data", str(new_text), "--hidden", "64"
    )
    assert_clean_error(r, "--hidden 64 disagrees with", "'s 32")
    r = run_cli("train", "--out", out, "--init-from", str(tmp_path / "nothing"), "--data", str(new_text))
    assert_clean_error(r, "nothing")
    assert not (tmp_path / "ft").exists()
    charnn.train(out, init_from=str(trained_run), data=str(new_text), max_steps=2, quiet=True)
    kept = weights_of(tmp_path / "ft")
    r = run_cli("train", "--out", out, "--resume", "--init-from", str(trained_run))
    assert_clean_error(r, "--init-from starts a new run", "--resume")
    assert all(torch.equal(kept[k], v) for k, v in weights_of(tmp_path / "ft").items())
    itself = run_cli("train", "--out", out, "--overwrite", "--init-from", out, "--data", str(new_text))
    assert_clean_error(itself, f"--init-from {out} lies in --out {out}", "train into another folder")
    assert all(torch.equal(kept[k], v) for k, v in weights_of(tmp_path / "ft").items())  # not replaced


def test_the_shipped_model_is_recorded_by_its_name(tmp_path):
    (tmp_path / "lines.txt").write_text("ROMEO: What, ho! Speak, speak.\n" * 200, encoding="utf-8")
    charnn.train(
        tmp_path / "ft", init_from="shakespeare", data=str(tmp_path / "lines.txt"), max_steps=1,
        seq_len=16, batch_size=2, val_fraction=0.05, quiet=True,
    )  # fmt: skip
    record = load_model(tmp_path / "ft").info["training"]["init_from"]
    assert record["path"] == "shakespeare"  # not the folder it was installed in


def test_extend_vocab_alone_is_refused_by_the_config():
    with pytest.raises(ConfigError, match="--extend-vocab needs --init-from"):
        TrainConfig(extend_vocab=True)
