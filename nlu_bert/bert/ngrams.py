"""Hashed character n-gram ids for the intent model's n-gram features (no torch: used at inference too).

Hashing uses CRC32, so bucket ids are stable across processes and Python versions.
"""

from __future__ import annotations

import unicodedata
import zlib
from typing import Any, List, Mapping, Sequence, Tuple

import numpy as np


def ngram_ids(text: str, buckets: int, ngram_range: Tuple[int, int], max_ngrams: int) -> List[int]:
    """Hashed character n-gram ids in ``[1, buckets)`` (0 is padding); spaces separate words."""
    # NFKC and lower case: part of the archive format (the buckets a trained model's n-grams were hashed into)
    folded = unicodedata.normalize("NFKC", text).lower()
    chars = "".join(ch for ch in folded if not unicodedata.category(ch).startswith("C"))
    chars = " ".join(chars.split())
    ids: List[int] = []
    lo, hi = ngram_range
    for n in range(lo, hi + 1):
        for i in range(len(chars) - n + 1):
            gram = chars[i : i + n]
            if gram.isspace() or (n > 1 and " " in gram.strip()):
                continue
            ids.append(1 + zlib.crc32(f"{n}:{gram}".encode("utf-8")) % (buckets - 1))
            if len(ids) >= max_ngrams:
                return ids
    return ids


def batch_ngram_ids(texts: Sequence[str], buckets: int, ngram_range: Tuple[int, int], max_ngrams: int) -> np.ndarray:
    rows = [ngram_ids(t, buckets, ngram_range, max_ngrams) or [0] for t in texts]
    width = max(len(r) for r in rows)
    out = np.zeros((len(rows), width), dtype=np.int64)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out


def ids_for(texts: Sequence[str], meta: Mapping[str, Any]) -> np.ndarray:
    """:func:`batch_ngram_ids` with the settings a trained model keeps in its meta.json."""
    return batch_ngram_ids(texts, meta["ngram_buckets"], tuple(meta["ngram_range"]), meta["max_ngrams"])
