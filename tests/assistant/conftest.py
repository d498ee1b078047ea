"""Fixtures of the sample assistant's tests: a tiny model trained once, a seeded shop database,
the action server and ``rasa run`` as real processes on free ports.

The model is trained once per test session from ``config.offline.yml`` (the real pipeline:
JiebaTokenizer, BertIntentClassifier, GPT2FewShotIntentClassifier, RegexEntityExtractor,
FallbackClassifier) with tiny backbones patched in (``assistant_helpers.TINY``). Every process
is stopped in teardown.

``NLU_BERT_ASSISTANT_MODEL=/path/to/model.tar.gz`` reuses a model trained earlier (handy while
working on the tests themselves).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path
from typing import Iterator

import pytest
import yaml

from assistant_helpers import (
    ASSISTANT_DATA,
    PYTHON,
    REPO_ROOT,
    Process,
    RasaServer,
    build_test_config,
    free_port,
    subprocess_env,
    tail,
)

# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def assistant_workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("assistant")


@pytest.fixture(scope="session")
def assistant_config_path(assistant_workdir: Path) -> Path:
    path = assistant_workdir / "config.test.yml"
    path.write_text(yaml.safe_dump(build_test_config(), allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def assistant_model(assistant_workdir: Path, assistant_config_path: Path) -> Path:
    """The assistant trained once per session with the tiny real pipeline (1-3 minutes)."""
    reuse = os.environ.get("NLU_BERT_ASSISTANT_MODEL")
    if reuse:
        return Path(reuse)
    out = assistant_workdir / "models"
    log = assistant_workdir / "train.log"
    started = time.monotonic()
    with log.open("wb") as handle:
        result = subprocess.run(
            [
                PYTHON,
                "-m",
                "rasa",
                "train",
                "--config",
                str(assistant_config_path),
                "--domain",
                str(REPO_ROOT / "domain.yml"),
                "--data",
                *ASSISTANT_DATA,
                "--out",
                str(out),
                "--fixed-model-name",
                "assistant-test",
            ],
            cwd=assistant_workdir,
            env=subprocess_env(),
            stdout=handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            timeout=900,
        )
    model = out / "assistant-test.tar.gz"
    assert result.returncode == 0 and model.exists(), f"rasa train failed ({result.returncode}):\n{tail(log, 80)}"
    print(f"\n[assistant] trained {model.name} in {time.monotonic() - started:.0f} s")
    return model


@pytest.fixture(scope="session")
def shop_db_url(assistant_workdir: Path) -> str:
    from rasa_project import db

    url = f"sqlite:///{assistant_workdir / 'shop.db'}"
    db.seed(url)
    return url


@pytest.fixture
def fresh_shop_db(shop_db_url: str) -> str:
    """The session's shop database, reset to the seed before the test."""
    from rasa_project import db

    db.reset(shop_db_url)
    return shop_db_url


@pytest.fixture(scope="session")
def action_server(assistant_workdir: Path, shop_db_url: str) -> Iterator[str]:
    port = free_port()
    server = Process(
        "rasa run actions",
        [PYTHON, "-m", "rasa", "run", "actions", "--actions", "rasa_project.actions", "--port", str(port)],
        subprocess_env(SHOP_DB_URL=shop_db_url),
        assistant_workdir / "actions.log",
        f"http://127.0.0.1:{port}/health",
    )
    server.start(timeout=120)
    yield f"http://127.0.0.1:{port}/webhook"
    server.stop()


@pytest.fixture(scope="session")
def widget_port() -> int:
    """The port of the static page that embeds rasa-webchat (test_rasa_webchat.py): its origin is allowed by CORS."""
    return free_port()


@pytest.fixture(scope="session")
def rasa_server(
    assistant_model: Path, assistant_workdir: Path, action_server: str, widget_port: int
) -> Iterator[RasaServer]:
    server = RasaServer(
        assistant_model,
        assistant_workdir,
        action_server,
        subprocess_env(),
        extra_origins=[f"http://127.0.0.1:{widget_port}"],
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture
def sender() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def chromium_path() -> str:
    path = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).exists():
        pytest.skip("Debian chromium is not installed (apt-get install -y chromium)")
    return path
