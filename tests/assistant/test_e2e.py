"""The assistant end to end: real `rasa run`, real action server, real SQLite databases.

One tiny model is trained per session (conftest.assistant_model); these tests share it and one
server. Marked `slow`: together a few minutes on two CPU cores.
"""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from assistant_helpers import PYTHON, REPO_ROOT, RasaServer, http_json, subprocess_env, tail

pytestmark = pytest.mark.slow


def test_greet_then_order_status_from_the_database(rasa_server: RasaServer, fresh_shop_db: str, sender: str) -> None:
    greeting = rasa_server.say_text(sender, "你好")
    assert "小禾" in greeting

    answer = rasa_server.say_text(sender, "帮我查一下订单2405200117现在什么情况")
    # Every fact below comes from the shop database (rasa_project/db.py seed).
    assert "2405200117" in answer and "智能手环" in answer and "运输中" in answer and "中通快递" in answer

    logistics = rasa_server.say_text(sender, "那快递到哪了")
    assert "ZT7531902468" in logistics  # the tracking number: the order number was remembered


def test_unknown_order_number_is_asked_again(rasa_server: RasaServer, fresh_shop_db: str, sender: str) -> None:
    assert "订单号" in rasa_server.say_text(sender, "我的快递到哪了")
    reply = rasa_server.say_text(sender, "2405999999")
    assert "没有找到" in reply and "订单号" in reply
    reply = rasa_server.say_text(sender, "2405190555")
    assert "京东物流" in reply


def test_return_form_over_several_turns_writes_the_database(
    rasa_server: RasaServer, fresh_shop_db: str, sender: str
) -> None:
    from rasa_project import db

    assert "退货的订单号" in rasa_server.say_text(sender, "我想退货")
    reply = rasa_server.say_text(sender, "2405150876")  # delivered 20 days ago: past the 7-day window
    assert "七天无理由" in reply and "退货的订单号" in reply
    assert "原因" in rasa_server.say_text(sender, "2405180031")
    done = rasa_server.say_text(sender, "尺码太小了")
    assert "R00001" in done and "尺寸不合适" in done

    with db.session_scope(fresh_shop_db) as session:
        request = session.query(db.ReturnRequest).one()
        assert (request.order_id, request.reason, request.sender_id) == ("2405180031", "尺寸不合适", sender)
        assert session.get(db.Order, "2405180031").status == db.STATUS_RETURNING

    slots = rasa_server.tracker(sender)["slots"]
    assert slots["return_reason"] is None and slots["requested_slot"] is None


def test_coupons_claimed_into_the_database(rasa_server: RasaServer, fresh_shop_db: str, sender: str) -> None:
    from rasa_project import db

    assert "一键领取" in rasa_server.say_text(sender, "有什么优惠券吗")
    assert "已为您领取 3 张" in rasa_server.say_text(sender, "好的")
    with db.session_scope(fresh_shop_db) as session:
        assert session.query(db.CouponClaim).filter_by(sender_id=sender).count() == 3


def test_out_of_scope_gets_a_helpful_answer(rasa_server: RasaServer, sender: str) -> None:
    reply = rasa_server.say_text(sender, "帮我订一张去上海的高铁票")
    # utter_out_of_scope or utter_default (nlu_fallback): both say what the bot can do
    assert "我可以帮您" in reply or "换个说法" in reply


def test_parse_output_carries_the_few_shot_report(rasa_server: RasaServer) -> None:
    parse = rasa_server.parse("蓝牙耳机多少钱")
    assert parse["intent"]["name"] and 0.0 <= parse["intent"]["confidence"] <= 1.0
    assert {"entity": "product", "value": "蓝牙耳机"}.items() <= parse["entities"][0].items()
    assert "few_shot" in parse, "GPT2FewShotIntentClassifier must report in /model/parse"
    assert isinstance(parse["few_shot"]["acted"], bool) and parse["few_shot"]["reason"]


def test_web_chat_page_is_served_by_rasa(rasa_server: RasaServer) -> None:
    import urllib.error
    import urllib.request

    with urllib.request.urlopen(f"{rasa_server.url}/webhooks/webchat") as response:  # redirected to .../
        assert response.url.endswith("/webhooks/webchat/")
        assert "青禾生活馆" in response.read().decode("utf-8")
    with urllib.request.urlopen(f"{rasa_server.url}/webhooks/webchat/app.js") as response:
        assert "javascript" in response.headers["Content-Type"]
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(f"{rasa_server.url}/webhooks/webchat/..%2Fdb.py")
    assert error.value.code == 404


def test_conversation_survives_a_server_restart(rasa_server: RasaServer, fresh_shop_db: str, sender: str) -> None:
    rasa_server.say_text(sender, "你好")
    rasa_server.say_text(sender, "查一下订单2405190555")
    before = rasa_server.tracker(sender)

    rasa_server.restart()  # a new process: only the SQL tracker store remembers

    after = rasa_server.tracker(sender)
    texts = [e.get("text") for e in after["events"] if e["event"] == "user"]
    assert texts[:2] == ["你好", "查一下订单2405190555"]
    assert after["slots"]["order_id"] == "2405190555"
    assert len(after["events"]) >= len(before["events"])
    # and the conversation goes on where it was: the order number is still known
    assert "JDV002233445566" in rasa_server.say_text(sender, "快递到哪儿了")


def test_rasa_test_stories_pass(assistant_model: Path, assistant_workdir: Path) -> None:
    out = assistant_workdir / "rasa_test_results"
    log = assistant_workdir / "rasa_test.log"
    with log.open("wb") as handle:
        result = subprocess.run(
            [PYTHON, "-m", "rasa", "test", "core", "--stories", str(REPO_ROOT / "tests" / "test_stories.yml"),
             "--model", str(assistant_model), "--out", str(out), "--fail-on-prediction-errors"],
            cwd=assistant_workdir, env=subprocess_env(), stdout=handle, stderr=subprocess.STDOUT, timeout=600,
        )
    failed = (out / "failed_test_stories.yml").read_text(encoding="utf-8") if out.exists() else ""
    assert result.returncode == 0, f"{failed}\n{tail(log, 40)}"
    assert "None of the test stories failed" in failed
    report = json.loads((out / "story_report.json").read_text(encoding="utf-8"))
    conversations = report["conversation_accuracy"]
    assert conversations["correct"] == conversations["total"] >= 9, conversations
