"""The model folder: round trips, and every way it can be damaged refused with its file named."""

import json
from pathlib import Path

import pytest
import torch

from charnn.config import ModelConfig
from charnn.errors import ModelFileError
from charnn.fileio import write_folder
from charnn.nn.model import CharRNN
from charnn.store.model_dir import FORMAT_VERSION, load_model, save_model
from charnn.text.vocab import Vocab

VOCAB = Vocab.from_text("abcdefgh\n ")


def tiny_model(**kw) -> CharRNN:
    torch.manual_seed(0)
    return CharRNN(ModelConfig(vocab_size=len(VOCAB), hidden=12, embedding=6, **kw))


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    save_model(tmp_path / "model", tiny_model(), VOCAB, {"steps": 3})
    return tmp_path / "model"


def test_model_folder_round_trips(model_dir):
    assert sorted(p.name for p in model_dir.iterdir()) == ["config.json", "model.safetensors", "vocab.json"]
    loaded = load_model(model_dir)
    assert loaded.vocab == VOCAB
    assert loaded.info["training"] == {"steps": 3}
    for (name, a), b in zip(
        tiny_model().state_dict().items(), loaded.model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name


def test_a_model_saved_before_io_and_weight_dropout_existed_still_loads(model_dir):
    config_file = model_dir / "config.json"
    config = json.loads(config_file.read_text())
    del config["model"]["io_dropout"], config["model"]["weight_dropout"]
    config_file.write_text(json.dumps(config))
    loaded = load_model(model_dir).model.config
    assert (loaded.io_dropout, loaded.weight_dropout) == (0.0, 0.0)


def test_a_run_folder_resolves_to_its_model(model_dir):
    assert load_model(model_dir.parent).path == model_dir


def test_saving_again_replaces_the_folder_whole(model_dir):
    save_model(model_dir, tiny_model(cell="gru"), VOCAB, {"steps": 9})
    assert load_model(model_dir).config.cell == "gru"
    assert sorted(p.name for p in model_dir.parent.iterdir()) == ["model"]  # no temp folders left


def test_tampered_weights_are_refused_unless_not_verifying(model_dir):
    path = model_dir / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="sha256 does not match.*--no-verify"):
        load_model(model_dir)
    load_model(model_dir, verify=False)


def test_truncated_weights_are_refused(model_dir):
    path = model_dir / "model.safetensors"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ModelFileError, match="model.safetensors: not a readable safetensors file"):
        load_model(model_dir, verify=False)


def test_config_not_matching_weights_is_refused(model_dir):
    config = json.loads((model_dir / "config.json").read_text())
    config["model"]["hidden"] = 13
    (model_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelFileError, match="shape"):
        load_model(model_dir)


def test_newer_format_is_refused_with_advice(model_dir):
    config = json.loads((model_dir / "config.json").read_text())
    config["format_version"] = FORMAT_VERSION + 1
    (model_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelFileError, match="newer charnn"):
        load_model(model_dir)


def test_vocab_not_matching_the_embedding_is_refused(model_dir):
    (model_dir / "vocab.json").write_text(Vocab.from_text("abc").to_json())
    with pytest.raises(ModelFileError, match="holds 3 characters"):
        load_model(model_dir)


def test_a_model_caught_mid_swap_still_loads(model_dir):
    model_dir.rename(model_dir.parent / ".model.old-4242")
    assert load_model(model_dir.parent).vocab == VOCAB


def test_a_moved_aside_model_emptied_before_its_read_began_is_read_again_from_model(tmp_path, monkeypatch):
    """A swap's moved-aside copy may lose its files to the writer's clean-up before the read takes its
    identity (so the folder looks unchanged after the failed read): being a copy of passage, it is read again,
    and model/ is there by then."""
    import charnn.store.model_dir as model_dir

    save_model(tmp_path / "new", tiny_model(), VOCAB, {"steps": 2})
    run = tmp_path / "run"
    save_model(run / ".model.old-123", tiny_model(), VOCAB, {"steps": 1})
    (run / ".model.old-123" / "model.safetensors").unlink()  # the clean-up under way
    (run / "train_args.json").write_text("{}")
    snapshot, calls = model_dir._snapshot, []

    def swap_finishing(directory):
        if not calls:  # the writer's second rename lands while the first read runs
            (tmp_path / "new").rename(run / "model")
        calls.append(directory.name)
        return snapshot(directory)

    monkeypatch.setattr(model_dir, "_snapshot", swap_finishing)
    assert load_model(run).info["training"]["steps"] == 2
    assert calls == [".model.old-123", "model"]
    # a damaged copy left by a crash, with no model/ to find, is still refused, after a few reads
    monkeypatch.setattr(model_dir, "_snapshot", snapshot)
    (run / "model").rename(tmp_path / "gone")
    with pytest.raises(ModelFileError, match="model.safetensors: missing"):
        load_model(run)


def test_a_model_read_while_a_run_keeps_replacing_it_is_always_whole(tmp_path):
    """A run replaces its model/ folder at each new best; `charnn generate RUN` beside it read files of two
    models (a false "sha256 does not match") or of a folder gone mid-read (a false "missing")."""
    import threading
    import time

    models = []
    for steps in (1, 2):
        model = tiny_model()
        with torch.no_grad():
            model.head.bias.fill_(steps)  # two models told apart by their weights
        save_model(tmp_path / f"m{steps}", model, VOCAB, {"steps": steps})
        models.append({p.name: p.read_bytes() for p in (tmp_path / f"m{steps}").iterdir()})
    run = tmp_path / "run"
    (run / "model").parent.mkdir()
    write_folder(run / "model", models[0])
    done = threading.Event()

    def replace_again_and_again() -> None:
        i = 0
        while not done.is_set():
            i += 1
            write_folder(run / "model", models[i % 2])
            time.sleep(0.001)

    replacer = threading.Thread(target=replace_again_and_again)
    replacer.start()
    loads, deadline = 0, time.monotonic() + 2.0
    try:
        while time.monotonic() < deadline:
            loaded = load_model(run)  # raises on a mix or a missing file
            assert loaded.info["training"]["steps"] == loaded.model.head.bias[0].item()
            loads += 1
    finally:
        done.set()
        replacer.join()
    assert loads > 20
