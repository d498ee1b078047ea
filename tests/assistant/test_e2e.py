"""The assistant end to end: real `rasa run`, real action server, real SQLite databases.

One tiny model is trained per session (conftest.assistant_model); these tests share it and one
server. Marked `slow`: together a few minutes on two CPU cores.
"""

from __future__ import annotations

import json
import re
import subprocess
import urllib.request
import uuid
from pathlib import Path
from urllib.parse import quote

import pytest
import yaml

from assistant_helpers import PYTHON, REPO_ROOT, RasaServer, http_json, subprocess_env, tail
from rasa_process import http

pytestmark = pytest.mark.slow


def test_greet_then_order_status_from_the_database(rasa_server: RasaServer, fresh_shop_db: str, sender: str) -> None:
    greeting = rasa_server.say_text(sender, "你好")
    assert "小禾" in greeting

    ask = rasa_server.say_text(sender, "帮我查一下订单2405200117现在什么情况")
    assert "后四位" in ask and "智能手环" not in ask  # nothing about the order before the second factor
    answer = rasa_server.say_text(sender, "1357")
    # Every fact below comes from the shop database (rasa_project/db.py seed).
    assert "2405200117" in answer and "智能手环" in answer and "运输中" in answer and "中通快递" in answer

    logistics = rasa_server.say_text(sender, "那快递到哪了")
    assert "ZT7531902468" in logistics  # the order number and the verified phone were remembered


def test_an_unknown_number_and_a_wrong_phone_show_nothing(
    rasa_server: RasaServer, fresh_shop_db: str, sender: str
) -> None:
    assert "订单号" in rasa_server.say_text(sender, "我的快递到哪了")
    reply = rasa_server.say_text(sender, "2405999999")
    assert "后四位" in reply and "没有找到" not in reply  # no oracle for which numbers exist
    reply = rasa_server.say_text(sender, "1234")
    assert "对不上" in reply and "订单号" in reply
    reply = rasa_server.say_text(sender, "2405190555")
    assert "后四位" in reply and "京东" not in reply
    reply = rasa_server.say_text(sender, "0000")  # someone else's order: the courier's phone stays hidden
    assert "对不上" in reply and "JDV" not in reply and "138****2046" not in reply
    rasa_server.say_text(sender, "2405190555")
    assert "京东物流" in rasa_server.say_text(sender, "4826")


def test_tries_per_conversation_are_limited(rasa_server: RasaServer, fresh_shop_db: str, sender: str) -> None:
    rasa_server.say_text(sender, "帮我查一下订单2405200117")
    for wrong in ("1111", "2222"):
        assert "对不上" in rasa_server.say_text(sender, wrong)
        rasa_server.say_text(sender, "2405200117")
    locked = rasa_server.say_text(sender, "3333")
    assert "核对失败 3 次" in locked
    # the right digits no longer help in this conversation
    rasa_server.say_text(sender, "帮我查一下订单2405200117")
    assert "智能手环" not in rasa_server.say_text(sender, "1357")


def test_a_message_without_sender_is_refused_and_reads_no_other_conversation(
    rasa_server: RasaServer, fresh_shop_db: str, sender: str
) -> None:
    rasa_server.say_text(sender, "帮我查一下订单2405190555")
    assert "京东物流" in rasa_server.say_text(sender, "4826")
    for body in (
        {"message": "我的快递到哪了"},
        {"sender": "", "message": "我的快递到哪了"},
        {"sender": None, "message": "我的快递到哪了"},
        {"sender": ["a"], "message": "我的快递到哪了"},
    ):
        status, answer = http("POST", f"{rasa_server.url}/webhooks/rest/webhook", body)
        assert status == 400 and "`sender`" in answer["message"], (body, status, answer)
    assert rasa_server.user_texts("default") == []  # nothing went into Rasa's shared conversation


@pytest.mark.parametrize("odd_sender", ["用户 一", "a/b/../c", "订单?x=1#frag", "100%", "🙂 emoji"])
def test_sender_ids_round_trip_through_the_tracker(rasa_server: RasaServer, odd_sender: str) -> None:
    sender = f"{odd_sender}-{uuid.uuid4().hex[:6]}"
    assert "小禾" in rasa_server.say_text(sender, "你好")
    assert rasa_server.tracker(sender)["sender_id"] == sender
    assert rasa_server.user_texts(sender) == ["你好"]
    history = http_json("GET", f"{rasa_server.url}/webhooks/webchat/history?sender={quote(sender, safe='')}")
    assert [m["text"] for m in history["messages"] if m["role"] == "user"] == ["你好"]
    status, answer = http("POST", f"{rasa_server.url}/webhooks/rest/webhook", {"sender": "a\nb", "message": "你好"})
    assert status == 400 and "control characters" in answer["message"]


def test_an_empty_message_is_no_message(rasa_server: RasaServer, sender: str) -> None:
    rasa_server.say_text(sender, "你好")
    for empty in ("", "   ", "\n\t "):
        assert rasa_server.say(sender, empty) == []
    assert rasa_server.user_texts(sender) == ["你好"]


def test_the_api_needs_the_token_and_cors_names_the_page(rasa_server: RasaServer, sender: str) -> None:
    rasa_server.say_text(sender, "你好")
    for method, path, body in [
        ("GET", f"/conversations/{sender}/tracker", None),
        ("POST", "/model/parse", {"text": "你好"}),
        ("POST", f"/conversations/{sender}/trigger_intent", {"name": "greet"}),
        ("GET", "/status", None),
    ]:
        status, _ = http(method, f"{rasa_server.url}{path}", body)
        assert status == 401, (path, status)
    page_origin, evil = rasa_server.url, "http://evil.example"
    for origin, allowed in ((page_origin, True), (evil, False)):
        request = urllib.request.Request(f"{rasa_server.url}/webhooks/webchat/status", headers={"Origin": origin})
        with urllib.request.urlopen(request) as response:
            assert (response.headers.get("Access-Control-Allow-Origin") == origin) is allowed, origin


@pytest.mark.parametrize(
    "body, status",
    [
        ([], 400),
        ({"name": 123}, 400),
        ({"name": "no_such_intent"}, 404),
        ({"name": ""}, 400),
        ({"name": "greet", "entities": "x"}, 400),
        ({"name": "greet", "entities": [1]}, 400),
        ("greet", 400),
    ],
)
def test_trigger_intent_answers_bad_bodies_plainly(rasa_server: RasaServer, sender: str, body, status: int) -> None:
    url = f"{rasa_server.url}/conversations/{sender}/trigger_intent?token={rasa_server.TOKEN}"
    got, answer = http("POST", url, body)
    assert got == status and isinstance(answer, dict), (got, answer)
    assert not re.search(r"0x[0-9a-f]{6,}|Traceback|File \"|\.py\b|function", answer["message"]), answer
    got, answer = http("POST", url, {"name": "greet"})
    assert got == 200 and "小禾" in answer["messages"][0]["text"]


def test_return_form_over_several_turns_writes_the_database(
    rasa_server: RasaServer, fresh_shop_db: str, sender: str
) -> None:
    from rasa_project import db

    assert "退货的订单号" in rasa_server.say_text(sender, "我想退货")
    reply = rasa_server.say_text(sender, "2405150876")  # delivered 20 days ago: past the 7-day window
    assert "后四位" in reply and "七天" not in reply
    reply = rasa_server.say_text(sender, "5678")
    assert "七天无理由" in reply and "退货的订单号" in reply
    # the same customer's other order: the verified phone is kept, no second question
    assert "原因" in rasa_server.say_text(sender, "2405180031")
    done = rasa_server.say_text(sender, "尺码太小了")
    assert "R00001" in done and "尺寸不合适" in done

    with db.session_scope(fresh_shop_db) as session:
        request = session.query(db.ReturnRequest).one()
        assert (request.order_id, request.reason, request.sender_id) == ("2405180031", "尺寸不合适", sender)
        assert session.get(db.Order, "2405180031").status == db.STATUS_RETURNING

    slots = rasa_server.tracker(sender)["slots"]
    assert slots["return_reason"] is None and slots["requested_slot"] is None


def test_questions_inside_the_return_form_are_answered_and_the_form_goes_on(
    rasa_server: RasaServer, fresh_shop_db: str, sender: str
) -> None:
    assert "退货的订单号" in rasa_server.say_text(sender, "我要退货")
    reply = rasa_server.say_text(sender, "键盘还有货吗")
    assert "机械键盘" in reply and "¥399.00" in reply and "退货的订单号" in reply and "再核对" not in reply
    reply = rasa_server.say_text(sender, "有什么优惠券")
    assert "NEW20" in reply and "退货的订单号" in reply and "再核对" not in reply
    assert "后四位" in rasa_server.say_text(sender, "2405180031")
    assert "原因" in rasa_server.say_text(sender, "5678")
    assert "R00001" in rasa_server.say_text(sender, "质量问题")


def test_a_return_request_inside_the_order_form_switches_task(
    rasa_server: RasaServer, fresh_shop_db: str, sender: str
) -> None:
    assert "订单号" in rasa_server.say_text(sender, "我的快递到哪了")
    assert "退货的订单号" in rasa_server.say_text(sender, "我要退货")
    assert rasa_server.tracker(sender)["active_loop"]["name"] == "return_form"
    assert "好的" in rasa_server.say_text(sender, "算了")
    assert not (rasa_server.tracker(sender)["active_loop"] or {}).get("name")


def test_two_order_numbers_in_one_message_are_asked_about(
    rasa_server: RasaServer, fresh_shop_db: str, sender: str
) -> None:
    reply = rasa_server.say_text(sender, "帮我查一下订单2405180031和2405200117")
    assert "2 个订单号" in reply and "2405180031、2405200117" in reply
    assert "后四位" in rasa_server.say_text(sender, "2405200117")
    answer = rasa_server.say_text(sender, "1357")
    assert "2405200117" in answer and "智能手环" in answer and "2405180031" not in answer


def test_emoji_is_never_a_yes(rasa_server: RasaServer, fresh_shop_db: str, sender: str) -> None:
    from rasa_project import db

    assert "一键领取" in rasa_server.say_text(sender, "有什么优惠券")
    for emoji in ("😀", "😀" * 10, "👍", "！！！"):
        assert "已为您领取" not in rasa_server.say_text(sender, emoji)
        assert rasa_server.parse(emoji)["intent"]["name"] == "nlu_fallback"
    with db.session_scope(fresh_shop_db) as session:
        assert session.query(db.CouponClaim).filter_by(sender_id=sender).count() == 0


def test_coupons_claimed_into_the_database(rasa_server: RasaServer, fresh_shop_db: str, sender: str) -> None:
    from rasa_project import db

    assert "一键领取" in rasa_server.say_text(sender, "有什么优惠券吗")
    assert "已为您领取 3 张" in rasa_server.say_text(sender, "好的")
    with db.session_scope(fresh_shop_db) as session:
        assert session.query(db.CouponClaim).filter_by(sender_id=sender).count() == 3


@pytest.mark.parametrize("answer, claimed", [("是", 3), ("需要", 3), ("好的", 3), ("不用了", 0)])
def test_short_confirmations_answer_the_coupon_offer(
    rasa_server: RasaServer, fresh_shop_db: str, sender: str, answer: str, claimed: int
) -> None:
    from rasa_project import db

    assert "一键领取" in rasa_server.say_text(sender, "有优惠券吗")
    reply = rasa_server.say_text(sender, answer)
    assert ("已为您领取" in reply) == bool(claimed), reply
    with db.session_scope(fresh_shop_db) as session:
        assert session.query(db.CouponClaim).filter_by(sender_id=sender).count() == claimed


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


def _named_products() -> set:
    """Every product name the training data spells out: annotated values and synonyms (what a lookup table lists)."""
    from rasa.shared.nlu.training_data.loading import load_data

    nlu = load_data(str(REPO_ROOT / "data" / "nlu.yml"))
    annotated = {
        m.get("text")[e["start"] : e["end"]]
        for m in nlu.training_examples
        for e in m.get("entities") or []
        if e["entity"] == "product"
    }
    return annotated | set(nlu.entity_synonyms) | set(nlu.entity_synonyms.values())


@pytest.mark.parametrize(
    "text, phrase, product, price",
    [("蓝牙耳塞多少钱", "蓝牙耳塞", "蓝牙耳机", "¥299.00"), ("保温瓶还有货吗", "保温瓶", "保温杯", "¥89.00")],
)
def test_a_product_no_list_names_is_found_by_bert_and_answered(
    rasa_server: RasaServer, fresh_shop_db: str, sender: str, text: str, phrase: str, product: str, price: str
) -> None:
    # no example, synonym or database name holds the phrase, nor does it contain one: a lookup table would miss it
    assert not any(name in text for name in _named_products())
    parse = rasa_server.parse(text)
    found = [(text[e["start"] : e["end"]], e["extractor"]) for e in parse["entities"] if e["entity"] == "product"]
    assert found == [(phrase, "BertIntentClassifier")], parse["entities"]
    assert 0.0 < parse["entities"][0]["confidence_entity"] <= 1.0
    reply = rasa_server.say_text(sender, text)
    assert product in reply and price in reply, reply
    assert rasa_server.tracker(sender)["slots"]["product"] == product


def test_a_quantity_prices_that_many(rasa_server: RasaServer, fresh_shop_db: str, sender: str) -> None:
    reply = rasa_server.say_text(sender, "买三个保温杯多少钱")
    assert "保温杯" in reply and "3 件共 ¥267.00" in reply, reply


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
    rasa_server.say_text(sender, "4826")
    before = rasa_server.tracker(sender)

    rasa_server.restart()  # a new process: only the SQL tracker store remembers

    after = rasa_server.tracker(sender)
    texts = [e.get("text") for e in after["events"] if e["event"] == "user"]
    assert texts[:3] == ["你好", "查一下订单2405190555", "4826"]
    assert after["slots"]["order_id"] == "2405190555"
    assert len(after["events"]) >= len(before["events"])
    # and the conversation goes on where it was: the order number is still known
    assert "JDV002233445566" in rasa_server.say_text(sender, "快递到哪儿了")


# Inside each form, what every intent leads to (data/rules.yml): answered and the form goes on, the form ends,
# a switch to the other form, or the form reads the message as its answer.
DETOUR_ANSWERS = {
    "greet": "utter_greet",
    "thanks": "utter_youre_welcome",
    "chitchat": "utter_chitchat",
    "out_of_scope": "utter_out_of_scope",
    "ask_opening_hours": "utter_opening_hours",
    "ask_product": "action_product_info",
    "ask_coupon": "action_list_coupons",
}
FORM_START = {
    "order_form": ("check_order_status", [{"slot_was_set": [{"order_query": "status"}]}]),
    "return_form": ("request_return", []),
}
ENDED = [{"action": "action_deactivate_loop"}, {"active_loop": None}, {"slot_was_set": [{"requested_slot": None}]}]


def form_detour_stories() -> list:
    """One test story per form and intent: the form asks for the order number, the user says something of that intent."""
    domain = yaml.safe_load((REPO_ROOT / "domain.yml").read_text(encoding="utf-8"))
    stories = []
    for form, (start, start_slots) in FORM_START.items():
        other = "return_form" if form == "order_form" else "order_form"
        for intent in [*domain["intents"], "nlu_fallback"]:
            if intent in DETOUR_ANSWERS:
                after = [{"action": DETOUR_ANSWERS[intent]}, {"action": form}, {"active_loop": form}]
            elif intent == "deny":
                after = [{"action": "utter_form_cancelled"}, *ENDED]
            elif intent == "goodbye":
                after = [{"action": "utter_goodbye"}, *ENDED]
            elif intent == "human_handoff":
                after = [{"action": "utter_handoff_during_form"}, *ENDED, {"action": "action_human_handoff"}]
            elif (form, intent) in {
                ("order_form", "request_return"),
                ("return_form", "check_order_status"),
                ("return_form", "check_logistics"),
            }:
                after = [*ENDED, {"action": other}, {"active_loop": other}]
            else:  # the answer to the form's question: the form validates it
                after = [{"action": form}]
            steps = [
                {"intent": start},
                *start_slots,
                {"action": form},
                {"active_loop": form},
                {"slot_was_set": [{"requested_slot": "order_id"}]},
                {"intent": intent},
                *after,
            ]
            stories.append({"story": f"{form}, then {intent}", "steps": steps})
    return stories


def test_rasa_test_stories_pass(assistant_model: Path, assistant_workdir: Path) -> None:
    stories = assistant_workdir / "test_stories"
    stories.mkdir(exist_ok=True)
    (stories / "test_stories.yml").write_text(
        (REPO_ROOT / "tests" / "test_stories.yml").read_text(encoding="utf-8"), encoding="utf-8"
    )
    detours = form_detour_stories()
    (stories / "form_detours.yml").write_text(
        yaml.safe_dump({"version": "3.1", "stories": detours}, allow_unicode=True, sort_keys=False), encoding="utf-8"
    )
    out = assistant_workdir / "rasa_test_results"
    log = assistant_workdir / "rasa_test.log"
    with log.open("wb") as handle:
        result = subprocess.run(
            [
                PYTHON,
                "-m",
                "rasa",
                "test",
                "core",
                "--stories",
                str(stories),
                "--model",
                str(assistant_model),
                "--out",
                str(out),
                "--fail-on-prediction-errors",
            ],
            cwd=assistant_workdir,
            env=subprocess_env(),
            stdout=handle,
            stderr=subprocess.STDOUT,
            timeout=600,
        )
    failed = (out / "failed_test_stories.yml").read_text(encoding="utf-8") if out.exists() else ""
    assert result.returncode == 0, f"{failed}\n{tail(log, 40)}"
    assert "None of the test stories failed" in failed
    report = json.loads((out / "story_report.json").read_text(encoding="utf-8"))
    conversations = report["conversation_accuracy"]
    assert conversations["correct"] == conversations["total"] >= 9 + len(detours) == 9 + 32, conversations
