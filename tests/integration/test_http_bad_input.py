"""Bad input at a real `rasa run --enable-api` with the RequestGuard: a 4xx with a message or a valid parse,
and the server keeps answering the next request."""

from __future__ import annotations

from pathlib import Path

import pytest

from bad_inputs import CASES, PARSE
from nlu_testing import TINY_BOT
from rasa_process import GUARDED_CREDENTIALS, http, rasa_server

pytestmark = pytest.mark.slow


def post_raw(url: str, body: bytes) -> tuple:
    return http("POST", url, raw=body)


def test_every_bad_input_gets_4xx_or_a_valid_parse_and_the_server_survives(trained_model: Path, tmp_path: Path) -> None:
    (tmp_path / "credentials.yml").write_text(GUARDED_CREDENTIALS, encoding="utf-8")
    with rasa_server(
        trained_model, tmp_path, tmp_path / "server.log", extra_args=["--credentials", "credentials.yml"]
    ) as url:
        status, limits = http("GET", f"{url}/webhooks/guard/")
        assert status == 200 and limits["max_text_chars"] == 5000
        failures = []
        for name, path, body, allowed in CASES:
            status, answer = post_raw(f"{url}{path}", body)
            if status not in allowed:
                failures.append(f"{name}: {status} {str(answer)[:200]}")
            elif status >= 400:
                if not (isinstance(answer, dict) and answer.get("message")):
                    failures.append(f"{name}: {status} without a message: {str(answer)[:200]}")
            elif path == PARSE:
                intent = answer.get("intent") or {}
                ok_name = intent.get("name") in {None, "nlu_fallback", *TINY_BOT} or body.startswith(b'{"text": "/')
                if not ok_name or not isinstance(answer.get("intent_ranking"), list):
                    failures.append(f"{name}: 200 but not a valid parse: {str(answer)[:200]}")
            # the server keeps serving
            status, answer = http("POST", f"{url}{PARSE}", {"text": "我要退款"})
            if status != 200 or answer["intent"]["name"] not in TINY_BOT:
                failures.append(f"after {name}: server answered {status} {str(answer)[:200]}")
        assert not failures, "\n".join(failures)
        assert len(CASES) >= 30
