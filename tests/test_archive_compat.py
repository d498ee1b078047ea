"""Archives written by earlier nlu-bert releases load, and give the answers they gave under the release that wrote them.

tests/fixtures/archives/nlu-bert-<version>.tar.gz is a tiny Rasa model archive trained by that release's code
(scripts/build_compat_archive.py, from `git archive <commit>`); nlu-bert-<version>.json beside it holds what that
code answered for a few texts. A committed fixture rather than one built from git history during the test: it needs
neither the history (shallow clones, sdists) nor the old code to run on today's dependencies, and it is what users
have: archives that outlive the code that wrote them. Its config uses the key names of that release.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any, Dict

import pytest

from nlu_testing import REPO_ROOT

ARCHIVES = sorted((REPO_ROOT / "tests" / "fixtures" / "archives").glob("nlu-bert-*.tar.gz"))


def _answers(archive: Path) -> Dict[str, Any]:
    return json.loads(archive.with_name(archive.name.replace(".tar.gz", ".json")).read_text(encoding="utf-8"))


def test_there_is_a_fixture_of_the_previous_release() -> None:
    assert "nlu-bert-0.2.0.tar.gz" in [a.name for a in ARCHIVES]
    assert all(a.stat().st_size < 300_000 for a in ARCHIVES), "keep the fixtures tiny"


@pytest.mark.parametrize("archive", ARCHIVES, ids=[a.name for a in ARCHIVES])
def test_an_earlier_release_archive_gives_the_answers_it_gave_then(
    archive: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rasa.core.agent import Agent

    # the builder served the native file with onnxruntime (the old tree has no compiled kernel): same numbers here
    monkeypatch.setenv("NLU_BERT_NATIVE_KERNEL", "onnxruntime")
    with pytest.warns(FutureWarning) as warned:  # the archive's graph holds the config as that release wrote it
        agent = Agent.load(str(archive))
    if archive.name == "nlu-bert-0.2.0.tar.gz":
        renamed = {str(w.message).split("`")[1] for w in warned if "is the old name of" in str(w.message)}
        assert renamed == {
            "seed",
            "scratch_n_embd",
            "scratch_n_layer",
            "scratch_n_head",
            "inference_backend",
            "inference_precision",
        }
    for text, then in _answers(archive).items():
        now = asyncio.run(agent.parse_message(text))
        assert now["intent"]["name"] == then["intent"]["name"], text
        assert now["intent"]["confidence"] == pytest.approx(then["intent"]["confidence"], abs=1e-5), text
        assert [r["name"] for r in now["intent_ranking"]] == [r["name"] for r in then["intent_ranking"]], text
        for a, b in zip(now["intent_ranking"], then["intent_ranking"]):
            assert a["confidence"] == pytest.approx(b["confidence"], abs=1e-5), text
        for key in ("acted", "reason", "previous", "answer"):
            assert _rounded(now["few_shot"].get(key)) == _rounded(then["few_shot"].get(key)), (text, key)


def _rounded(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    return round(value, 5) if isinstance(value, float) else value
