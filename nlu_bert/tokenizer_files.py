"""Tokenizers read from a saved ``tokenizer.json`` with the ``tokenizers`` library only.

Serving imports neither transformers nor torch (``import transformers`` pulls in torch: about 0.7 GB and seconds
at start-up). :class:`TextEncoder` gives BERT's padded batches, :class:`TokenizerFile` the few calls the GPT-2
prompt encoder makes; both give the same ids as the transformers tokenizer that ``save_pretrained`` wrote.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np


def special_tokens(folder: Path) -> Dict[str, str]:
    """``{"pad_token": "[PAD]", ...}`` from ``tokenizer_config.json``, overridden by ``special_tokens_map.json``
    (as transformers reads them); files that are missing or unreadable are skipped."""
    names: Dict[str, str] = {}
    for file in ("tokenizer_config.json", "special_tokens_map.json"):
        path = Path(folder) / file
        if not path.is_file():
            continue
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        for key, value in data.items() if isinstance(data, dict) else ():
            if isinstance(value, dict):
                value = value.get("content")
            if key.endswith("_token") and isinstance(value, str):
                names[key] = value
    return names


def _tokenizer_json(path: Path) -> Any:
    from tokenizers import Tokenizer

    path = Path(path)
    if path.is_dir():
        path = path / "tokenizer.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: save the tokenizer with a fast (Rust) tokenizer.")
    return Tokenizer.from_file(str(path)), path


class TextEncoder:
    """Texts -> right-padded ``(input_ids, attention_mask)`` int64 arrays.

    Gives the same ids as ``PreTrainedTokenizerFast(texts, truncation=True, max_length=max_length,
    padding=True)`` for the ``tokenizer.json`` that ``save_pretrained`` writes.
    """

    def __init__(self, tokenizer_json: Path, max_length: int, pad_token: Optional[str] = None) -> None:
        self.tokenizer, path = _tokenizer_json(tokenizer_json)
        pad_token = pad_token or special_tokens(path.parent).get("pad_token") or "[PAD]"
        pad_id = self.tokenizer.token_to_id(pad_token)
        if pad_id is None:
            raise ValueError(f"the tokenizer in {path} has no padding token {pad_token!r}")
        self.max_length = int(max_length)
        self.tokenizer.enable_truncation(self.max_length)
        self.tokenizer.enable_padding(pad_id=pad_id, pad_token=pad_token)

    def __call__(self, texts: List[str]) -> Tuple[np.ndarray, np.ndarray]:
        return self.encode(texts)[:2]

    def encode(self, texts: List[str]) -> Tuple[np.ndarray, np.ndarray, List[List[Tuple[int, int]]]]:
        """``(input_ids, attention_mask, offsets)``: each token's ``(start, end)`` characters in its text, ``(0, 0)``
        for special tokens and padding (as transformers' ``return_offsets_mapping``)."""
        encodings = self.tokenizer.encode_batch(list(texts))
        ids = np.asarray([e.ids for e in encodings], dtype=np.int64)
        mask = np.asarray([e.attention_mask for e in encodings], dtype=np.int64)
        return ids, mask, [list(e.offsets) for e in encodings]


class TokenizerFile:
    """The parts of a transformers tokenizer the prompt encoder uses:
    ``tokenizer(text, add_special_tokens=False)["input_ids"]`` and the special token ids."""

    SPECIAL = ("cls", "bos", "sep", "eos", "pad", "unk")

    def __init__(self, folder: Path) -> None:
        self.tokenizer, path = _tokenizer_json(Path(folder) / "tokenizer.json")
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()
        names = special_tokens(path.parent)
        for kind in self.SPECIAL:
            value = names.get(f"{kind}_token")
            setattr(self, f"{kind}_token_id", self.tokenizer.token_to_id(value) if value is not None else None)

    def __call__(self, text: str, add_special_tokens: bool = True) -> Dict[str, List[int]]:
        return {"input_ids": self.tokenizer.encode(text, add_special_tokens=add_special_tokens).ids}
