"""The README is a guide of at most 300 lines with the two commands; docs/ holds one topic per file, current facts
only; each component's page lists the same config keys and defaults as its get_default_config(); every link
between them resolves."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import pytest

import nlu_bert

from nlu_testing import REPO_ROOT

README = REPO_ROOT / "README.md"
DOCS = REPO_ROOT / "docs"
PAGES = sorted(DOCS.glob("*.md"))
COMPONENT_PAGES = {
    "BertIntentClassifier": DOCS / "bert-intent-classifier.md",
    "GPT2FewShotIntentClassifier": DOCS / "gpt2-fewshot-classifier.md",
}


def test_the_readme_is_a_short_guide_with_the_two_commands() -> None:
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 300
    assert "make run" in text and "make test" in text
    for page in PAGES:  # every page of docs/ is linked from the README
        assert f"docs/{page.name}" in text, page.name


@pytest.mark.parametrize("path", [README, *PAGES], ids=lambda p: p.name)
def test_no_run_history_in_the_docs(path: Path) -> None:
    """History belongs in git: no "stop N" or "issue N" in the README or docs."""
    text = path.read_text(encoding="utf-8")
    assert not re.findall(r"\b(?:stop|issue)s? \d+", text, flags=re.I)


@pytest.mark.parametrize("path", [README, *PAGES], ids=lambda p: p.name)
def test_relative_links_resolve(path: Path) -> None:
    text = re.sub(r"```.*?```|`[^`\n]*`", "", path.read_text(encoding="utf-8"), flags=re.S)  # not in code
    for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", text):
        assert (path.parent / target).exists(), f"{path.name} links to {target}"


@pytest.mark.parametrize("path", [README, *PAGES], ids=lambda p: p.name)
def test_paths_and_tests_named_in_the_docs_exist(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    for name, test in re.findall(r"\b((?:nlu_bert|tests|benchmarks|scripts)/[\w/.-]+\.(?:py|sh|c))(?:::(\w+))?", text):
        assert (REPO_ROOT / name).exists(), f"{path.name} names {name}"
        if test:
            assert f"def {test}(" in (REPO_ROOT / name).read_text(encoding="utf-8"), f"{path.name} names {name}::{test}"


RESULTS = REPO_ROOT / "benchmarks" / "results"
BENCHMARKS = (
    "accuracy|agreement|bert_latency|confidence|fewshot_latency|gpt2_finetune|http_latency|install_size|int8_gemm_kernels"
    "|int8_schemes|load_test|message_profile|message_profile_rasa_states|warm_start"
)


@pytest.mark.parametrize("path", [README, *PAGES], ids=lambda p: p.name)
def test_result_files_named_in_the_docs_exist(path: Path) -> None:
    """Docs cite the current result set of each benchmark, and nothing else."""
    for stem in re.findall(rf"\b((?:{BENCHMARKS})[a-z0-9_]*)\.(?:md|json|png|\{{)", path.read_text(encoding="utf-8")):
        assert list(RESULTS.glob(f"{stem}.*")), f"{path.name} cites {stem}, which is not in benchmarks/results/"


def test_one_current_result_set_per_benchmark() -> None:
    stems = {p.stem for p in RESULTS.iterdir()}
    assert stems == set(BENCHMARKS.split("|")), stems


@pytest.mark.parametrize("component", sorted(COMPONENT_PAGES))
def test_each_component_page_lists_every_config_key_with_its_default(component: str) -> None:
    cls = getattr(nlu_bert, component)
    text = COMPONENT_PAGES[component].read_text(encoding="utf-8")
    section = text[text.index("## Configurable variables") :]
    section = section[: section.find("\n## ", 1) if "\n## " in section[1:] else len(section)]
    rows = dict(re.findall(r"^\| `([A-Za-z_0-9.]+)` \| ([^|]+) \|", section, flags=re.M))
    defaults = _flatten(cls.get_default_config())
    assert set(rows) == set(defaults), f"docs rows differ: {set(rows) ^ set(defaults)}"
    for key, value in defaults.items():
        shown = rows[key].strip().strip("`")
        expected = "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
        assert shown == expected, f"{component}.{key}: the docs say {shown!r}, the code says {expected!r}"


def _flatten(config: Mapping, prefix: str = "") -> dict:
    """Nested blocks (``inference: {backend: ...}``) are listed as ``inference.backend`` rows."""
    out = {}
    for key, value in config.items():
        if isinstance(value, Mapping) and value:
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = dict(value) if isinstance(value, Mapping) else value
    return out
