"""Damaged Rasa model archives (the session's tiny model, cut or repacked) at `Agent.load` and `rasa run`.

These tests pin what happens today, which is Rasa 3.6's behaviour and not all of it is good:

* `Agent.load` of an archive cut at half its size raises Python's own ``EOFError`` (from gzip) with
  no word of the archive's path;
* `rasa run` with such an archive, or with one whose BertIntentClassifier meta.json names another
  archive format, does NOT exit: `rasa.core.agent.load_agent` logs "Could not load model due to …"
  with a traceback, says "Rasa server is up and running." and serves without a model: ``/status``
  and ``/model/parse`` answer 409 "No agent loaded", and the REST webhook would answer 200 with no reply
  (the message dropped) but for the RequestGuard, which answers 503 with a message the client can retry
  on. Health checks must therefore use ``/status``, not ``/``.

If Rasa or nlu-bert change any of this (for example `rasa run` starts exiting non-zero), these tests
fail on purpose: update them and the Reliability section of the README together.
"""

from __future__ import annotations

import json
import tarfile
import time
from pathlib import Path
from typing import Callable, Dict

import pytest

from nlu_bert.archive import BERT, FORMATS
from nlu_bert.version import __version__

from rasa_process import GUARDED_CREDENTIALS, RASA, background, free_port, http

pytestmark = pytest.mark.slow

NO_AGENT = "No agent loaded. To continue processing, a model of a trained agent needs to be loaded."
EOF_MESSAGE = "Compressed file ended before the end-of-stream marker was reached"
FORMAT_MESSAGE = (
    "BertIntentClassifier: this model was trained by nlu-bert 9.0 with archive format 99; this nlu-bert ({version}) "
    "reads {formats}. Train the model again with `rasa train`, or install the nlu-bert version that trained it."
)


def truncated(model: Path, out: Path) -> Path:
    data = model.read_bytes()
    out.write_bytes(data[: len(data) // 2])
    return out


def other_archive_format(model: Path, out: Path) -> Path:
    """The same archive with the BertIntentClassifier's meta.json saying format 99, nlu-bert 9.0."""
    folder = out.parent / "unpacked"
    with tarfile.open(model, "r:gz") as tar:
        tar.extractall(folder)
    metas = list(folder.glob("components/*BertIntentClassifier*/meta.json"))
    assert len(metas) == 1, metas
    meta = json.loads(metas[0].read_text(encoding="utf-8"))
    assert meta["archive_format"] in FORMATS[BERT].reads
    metas[0].write_text(json.dumps({**meta, "archive_format": 99, "nlu_bert_version": "9.0"}), encoding="utf-8")
    with tarfile.open(out, "w:gz") as tar:
        for child in sorted(folder.iterdir()):
            tar.add(child, arcname=child.name)
    return out


def test_agent_load_of_a_truncated_archive_raises_eoferror(trained_model: Path, tmp_path: Path) -> None:
    from rasa.core.agent import Agent

    archive = truncated(trained_model, tmp_path / "half.tar.gz")
    started = time.monotonic()
    with pytest.raises(EOFError, match=EOF_MESSAGE) as info:
        Agent.load(str(archive))
    assert time.monotonic() - started < 60  # fails fast, no hang
    assert "half.tar.gz" not in str(info.value)  # Rasa does not say which archive


def _serve_damaged(archive: Path, tmp_path: Path) -> Dict[str, object]:
    """Start `rasa run` on ``archive``; what it answers once it listens, its log, whether it is still alive."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "server.log"
    (tmp_path / "credentials.yml").write_text(GUARDED_CREDENTIALS, encoding="utf-8")
    args = [RASA, "run", "--enable-api", "--model", str(archive), "--port", str(port), "-i", "127.0.0.1"]
    args += ["--credentials", str(tmp_path / "credentials.yml")]
    with background(args, tmp_path, log) as proc:
        deadline = time.monotonic() + 240
        while proc.poll() is None:
            try:
                if http("GET", f"{url}/", timeout=5)[0] == 200:  # "Hello from Rasa": it listens
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(
                    f"rasa run neither listened nor exited in 240 s:\n{log.read_text(errors='replace')[-3000:]}"
                )
            time.sleep(1)
        else:
            return {"exit_code": proc.returncode, "answers": None, "log": log.read_text(errors="replace")}
        answers = {
            "status": http("GET", f"{url}/status"),
            "parse": http("POST", f"{url}/model/parse", {"text": "我要退款"}),
            "webhook": http("POST", f"{url}/webhooks/rest/webhook", {"sender": "u1", "message": "我要退款"}),
        }
        time.sleep(1)
        return {"exit_code": proc.poll(), "answers": answers, "log": log.read_text(errors="replace")}


@pytest.mark.parametrize(
    "damage, error_line",
    [
        (truncated, f"ERROR    rasa.core.agent  - Could not load model due to {EOF_MESSAGE}."),
        (other_archive_format, "ERROR    rasa.core.agent  - Could not load model due to " + FORMAT_MESSAGE + "."),
    ],
    ids=["truncated archive", "other BertIntentClassifier archive format"],
)
def test_rasa_run_with_a_damaged_archive_logs_the_error_and_serves_without_a_model(
    trained_model: Path, tmp_path: Path, damage: Callable[[Path, Path], Path], error_line: str
) -> None:
    archive = damage(trained_model, tmp_path / "damaged.tar.gz")
    result = _serve_damaged(archive, tmp_path)
    log = str(result["log"])
    assert result["exit_code"] is None, f"rasa run exited with {result['exit_code']}:\n{log[-3000:]}"
    assert f"Loading model {archive}..." in log  # the only line that names the archive
    assert (
        error_line.format(version=__version__, formats="formats " + ", ".join(map(str, FORMATS[BERT].reads))) in log
    ), log[-3000:]
    assert "Traceback (most recent call last):" in log  # the operator gets a raw traceback
    assert "Rasa server is up and running." in log  # ... and a server without a model
    answers = result["answers"]
    for name in ("status", "parse"):
        status, body = answers[name]  # type: ignore[index]
        assert status == 409 and body["message"] == NO_AGENT, (name, status, body)
    status, body = answers["webhook"]  # type: ignore[index]
    # Rasa alone answers 200 [] and drops the message; the RequestGuard makes it a 503 the client can retry on
    assert status == 503 and body["reason"] == "NoModelLoaded", (status, body)
    assert body["message"].startswith("The server has no model loaded")
