"""Hashed character n-grams around each token (nlu_bert.bert.token_features)."""

from __future__ import annotations

import numpy as np

from nlu_bert.bert.token_features import DEFAULT_TEMPLATES, batch_token_ngram_ids, token_ngram_ids, token_strings

CHARS = [(0, 0)] + [(i, i + 1) for i in range(4)] + [(0, 0)]


def test_special_tokens_get_no_features_and_real_ones_get_every_template() -> None:
    ids = token_ngram_ids("买两本书", CHARS, buckets=1000)
    assert ids.shape == (6, len(DEFAULT_TEMPLATES))
    assert (ids[0] == 0).all() and (ids[-1] == 0).all()
    assert ((ids[1:5] >= 1) & (ids[1:5] < 1000)).all()


def test_same_window_same_id_across_texts_and_processes() -> None:
    a = token_ngram_ids("买两本书", CHARS, buckets=100003)
    b = token_ngram_ids("卖两本书", CHARS, buckets=100003)
    # the unigram of 两 is the same; its left bigram (买两 / 卖两) is not
    assert a[2, 0] == b[2, 0] and a[2, 1] != b[2, 1]
    # CRC32, not Python's salted hash: a fixed value
    assert (
        token_ngram_ids("书", [(0, 1)], buckets=100003, templates=((0,),))[0, 0]
        == 1 + __import__("zlib").crc32("0:书".encode()) % 100002
    )


def test_full_width_and_case_are_normalised_and_whitespace_is_marked() -> None:
    assert token_strings("ＡＢ c", [(0, 1), (1, 2), (3, 4)]) == ["a", "b", " c"]
    half = token_ngram_ids("ab", [(0, 1), (1, 2)], buckets=5000)
    full = token_ngram_ids("ＡＢ", [(0, 1), (1, 2)], buckets=5000)
    np.testing.assert_array_equal(half, full)


def test_batch_pads_rows() -> None:
    out = batch_token_ngram_ids(["ab", "abc"], [[(0, 1), (1, 2)], [(0, 1), (1, 2), (2, 3)]], width=4, buckets=50)
    assert out.shape == (2, 4, len(DEFAULT_TEMPLATES))
    assert (out[0, 2:] == 0).all() and (out[1, :3] > 0).all() and (out[1, 3] == 0).all()
