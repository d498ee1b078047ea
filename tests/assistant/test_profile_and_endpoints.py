"""The quickstart's profile choice, the endpoints and credentials files, the web chat assets."""

from __future__ import annotations

import http.server
import re
import subprocess
import threading
import time
from pathlib import Path
from typing import Dict, Iterator

import pytest

from assistant_helpers import PYTHON, REPO_ROOT, free_port

SCRIPT = REPO_ROOT / "scripts" / "choose_profile.py"
HUB_MODELS = ("hfl/chinese-bert-wwm-ext", "qgyd2021/few_shot_intent_gpt2_base")


def choose(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    base = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "HF_HOME": str(tmp_path / "hf")}
    return subprocess.run(
        [PYTHON, str(SCRIPT), "--timeout", "3"], env={**base, **env}, capture_output=True, text=True, timeout=60
    )


def fake_cache(hf_home: Path, repo_id: str) -> None:
    """The layout huggingface_hub writes: refs/main -> snapshots/<commit>/config.json."""
    folder = hf_home / "hub" / ("models--" + repo_id.replace("/", "--"))
    commit = "0123456789abcdef0123456789abcdef01234567"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(commit)
    (folder / "snapshots" / commit).mkdir(parents=True)
    (folder / "snapshots" / commit / "config.json").write_text("{}")


def test_offline_when_hub_offline_and_nothing_cached(tmp_path: Path) -> None:
    result = choose(tmp_path, HF_HUB_OFFLINE="1")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "offline"
    assert "HF_HUB_OFFLINE=1" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_hub_when_both_models_are_cached(tmp_path: Path) -> None:
    for repo in HUB_MODELS:
        fake_cache(tmp_path / "hf", repo)
    result = choose(tmp_path, HF_HUB_OFFLINE="1")
    assert result.stdout.strip() == "hub", result.stderr


def test_offline_when_only_one_model_is_cached(tmp_path: Path) -> None:
    fake_cache(tmp_path / "hf", HUB_MODELS[0])
    result = choose(tmp_path, HF_HUB_OFFLINE="1")
    assert result.stdout.strip() == "offline"
    assert HUB_MODELS[1] in result.stderr


def test_offline_quickly_when_the_endpoint_refuses(tmp_path: Path) -> None:
    started = time.monotonic()
    result = choose(tmp_path, HF_ENDPOINT=f"http://127.0.0.1:{free_port()}")
    assert result.stdout.strip() == "offline"
    assert "neither cached nor reachable" in result.stderr
    assert time.monotonic() - started < 30


@pytest.fixture
def mirror() -> Iterator[Dict[str, list]]:
    """A stand-in hub mirror answering HEAD /<repo>/resolve/main/config.json."""
    seen: Dict[str, list] = {"paths": []}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self) -> None:  # noqa: N802
            seen["paths"].append(self.path)
            ok = any(self.path == f"/{repo}/resolve/main/config.json" for repo in HUB_MODELS)
            self.send_response(200 if ok else 404)
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    seen["url"] = [f"http://127.0.0.1:{server.server_address[1]}"]
    yield seen
    server.shutdown()


def test_hub_when_the_mirror_has_both_models(tmp_path: Path, mirror) -> None:
    result = choose(tmp_path, HF_ENDPOINT=mirror["url"][0])
    assert result.stdout.strip() == "hub", result.stderr
    assert sorted(mirror["paths"]) == sorted(f"/{r}/resolve/main/config.json" for r in HUB_MODELS)


def test_profile_can_be_forced(tmp_path: Path) -> None:
    assert choose(tmp_path, NLU_BERT_PROFILE="hub", HF_HUB_OFFLINE="1").stdout.strip() == "hub"
    result = choose(tmp_path, NLU_BERT_PROFILE="cloud")
    assert result.returncode != 0 and "NLU_BERT_PROFILE must be one of" in result.stderr


# ------------------------------------------------------------------ endpoints and credentials


def test_development_endpoints_use_a_sql_tracker_store() -> None:
    from rasa.core.utils import AvailableEndpoints

    endpoints = AvailableEndpoints.read_endpoints(str(REPO_ROOT / "rasa_project" / "endpoints.yml"))
    assert endpoints.action.url == "http://localhost:5055/webhook"
    assert endpoints.tracker_store.type == "SQL"
    assert endpoints.tracker_store.kwargs["dialect"] == "sqlite"
    assert endpoints.lock_store is None


def test_production_endpoints_postgres_and_redis(monkeypatch) -> None:
    from rasa.core.utils import AvailableEndpoints

    values = dict(
        ACTION_SERVER_URL="http://actions:5055/webhook",
        DB_HOST="db",
        DB_PORT="5432",
        DB_NAME="rasa",
        DB_USER="rasa",
        DB_PASSWORD="secret",
        REDIS_HOST="redis",
        REDIS_PORT="6379",
        REDIS_PASSWORD="r",
    )
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    endpoints = AvailableEndpoints.read_endpoints(str(REPO_ROOT / "rasa_project" / "endpoints.production.yml"))
    assert endpoints.action.url == "http://actions:5055/webhook"
    from nlu_bert.action_payload import turns_setting

    assert turns_setting(endpoints.action) == 10  # the last 10 turns' events to the action server
    assert endpoints.tracker_store.type == "nlu_bert.tracker_store.ResilientSQLTrackerStore"
    assert endpoints.tracker_store.kwargs["dialect"] == "postgresql"
    assert endpoints.tracker_store.url == "db"
    assert endpoints.lock_store.type == "nlu_bert.lock_store.ResilientRedisLockStore"
    assert endpoints.lock_store.url == "redis"
    from rasa.core.lock_store import LockStore

    from nlu_bert.lock_store import ResilientRedisLockStore

    store = LockStore.create(endpoints.lock_store)  # as `rasa run` makes it (redis-py connects lazily)
    assert isinstance(store, ResilientRedisLockStore)
    assert store.red.connection_pool.connection_kwargs["host"] == "redis"
    assert store.red.connection_pool.connection_kwargs["password"] == "r"


def test_credentials_register_rest_socketio_the_web_chat_page_and_the_request_guard() -> None:
    from rasa.core.channels.rest import RestInput
    from rasa.core.channels.socketio import SocketIOInput
    from rasa.core.run import create_http_input_channels

    from nlu_bert.http_guard import RequestGuard
    from rasa_project.webchat_channel import WebChatInput

    channels = create_http_input_channels(None, str(REPO_ROOT / "rasa_project" / "credentials.yml"))
    assert {type(c) for c in channels} == {RestInput, SocketIOInput, WebChatInput, RequestGuard}
    socketio = next(c for c in channels if isinstance(c, SocketIOInput))
    # what rasa-webchat and Rasa's chat widget expect
    assert (socketio.user_message_evt, socketio.bot_message_evt, socketio.session_persistence) == (
        "user_uttered",
        "bot_uttered",
        True,
    )
    assert next(c for c in channels if isinstance(c, RequestGuard)).max_text_chars == 5000
    assert next(c for c in channels if isinstance(c, WebChatInput)).url_prefix() == "webchat"


def test_web_chat_page_has_no_external_resources() -> None:
    folder = REPO_ROOT / "rasa_project" / "webchat"
    html = (folder / "index.html").read_text(encoding="utf-8")
    for name in re.findall(r'(?:src|href)="([^"]+)"', html):
        assert "//" not in name, f"external resource {name}"
        assert (folder / name).is_file(), name
    for path in folder.iterdir():
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"https?://(?!localhost)", text), f"{path.name} names an external URL"
