"""The README lists the same config keys as each component's get_default_config()."""
from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import pytest

import nlu_bert

README = Path(__file__).resolve().parents[1] / "README.md"


def _section(text: str, heading: str) -> str:
    start = text.index(f"## {heading}")
    nxt = text.find("\n## ", start + 1)
    return text[start : nxt if nxt > 0 else len(text)]


@pytest.mark.parametrize("component", ["BertIntentClassifier", "GPT2FewShotIntentClassifier"])
def test_readme_lists_every_config_key_with_its_default(component: str) -> None:
    cls = getattr(nlu_bert, component)
    section = _section(README.read_text(encoding="utf-8"), component)
    rows = dict(re.findall(r"^\| `([a-z_0-9.]+)` \| ([^|]+) \|", section, flags=re.M))
    defaults = _flatten(cls.get_default_config())
    assert set(rows) == set(defaults), f"README rows differ: {set(rows) ^ set(defaults)}"
    for key, value in defaults.items():
        shown = rows[key].strip().strip("`")
        expected = "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
        assert shown == expected, f"{component}.{key}: README says {shown!r}, code says {expected!r}"


def _flatten(config: Mapping, prefix: str = "") -> dict:
    """Nested blocks (``inference: {backend: ...}``) are listed as ``inference.backend`` rows."""
    out = {}
    for key, value in config.items():
        if isinstance(value, Mapping) and value:
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = dict(value) if isinstance(value, Mapping) else value
    return out
