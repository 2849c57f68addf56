import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from charnn.errors import ConfigError, ModelFileError
from charnn.text.vocab import Vocab


@given(st.text(min_size=1))
def test_encode_decode_round_trips_any_unicode(text):
    vocab = Vocab.from_text(text)
    ids = vocab.encode(text)
    assert len(ids) == len(text)
    assert vocab.decode(ids) == text


@given(st.text(min_size=1))
def test_vocab_json_round_trips(text):
    vocab = Vocab.from_text(text)
    assert Vocab.from_json(vocab.to_json()) == vocab


def test_multibyte_emoji_and_combining_marks():
    text = "naïve café — e\u0301 👩‍🔬 日本語 \U0001f600\n"
    vocab = Vocab.from_text(text)
    assert vocab.decode(vocab.encode(text)) == text
    assert "\u0301" in vocab.chars  # a combining mark is its own symbol


def test_vocab_is_sorted_set_of_characters_like_the_tutorial():
    text = "hello world"
    assert Vocab.from_text(text).chars == tuple(sorted(set(text)))
    assert Vocab.from_text(text).encode("hello").tolist() == [3, 2, 4, 4, 5]


def test_ids_use_the_smallest_dtype():
    assert Vocab.from_text("abc").encode("abc").dtype == np.uint8
    big = "".join(chr(0x4E00 + i) for i in range(300))
    assert Vocab.from_text(big).encode(big).dtype == np.uint16
    huge = "".join(chr(0x10000 + i) for i in range(70_000))
    assert Vocab.from_text(huge).encode(huge).dtype == np.uint32


def test_encode_names_unknown_characters():
    vocab = Vocab.from_text("abc")
    with pytest.raises(ConfigError, match="'z'"):
        vocab.encode("abz")
    assert vocab.unknown("abzy") == ["y", "z"]


def test_decode_rejects_out_of_range_ids():
    with pytest.raises(ConfigError):
        Vocab.from_text("ab").decode([0, 2])


@pytest.mark.parametrize(
    "payload",
    [
        "not json",
        json.dumps({"chars": "abc"}),
        json.dumps({"chars": ["b", "a"]}),
        json.dumps({"x": []}),
        json.dumps({"chars": ["ab"]}),
        json.dumps({"chars": []}),
    ],
)
def test_from_json_rejects_bad_vocab_files(payload):
    with pytest.raises(ModelFileError, match=r"vocab\.json"):
        Vocab.from_json(payload)
