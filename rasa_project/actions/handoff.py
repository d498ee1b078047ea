"""Human handoff: a ticket in the database that the human agents pick up."""

from __future__ import annotations

import datetime as dt
from typing import List, Text

from rasa_sdk import Action, Tracker
from rasa_sdk.events import EventType
from rasa_sdk.executor import CollectingDispatcher
from rasa_sdk.types import DomainDict

from rasa_project import db
from rasa_project.actions.common import recent_user_texts

#: Hours during which human agents answer (utter_opening_hours says the same).
AGENT_HOURS = (9, 22)


def agents_online(now: dt.datetime) -> bool:
    return AGENT_HOURS[0] <= now.hour < AGENT_HOURS[1]


class ActionHumanHandoff(Action):
    def name(self) -> Text:
        return "action_human_handoff"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict) -> List[EventType]:
        summary = " / ".join(recent_user_texts(tracker))
        order_id = tracker.get_slot("order_id")
        if order_id:
            summary = f"[订单 {order_id}] {summary}"
        with db.session_scope() as session:
            ticket = db.HandoffTicket(sender_id=tracker.sender_id, summary=summary)
            session.add(ticket)
            session.flush()
            number = ticket.number
        if agents_online(dt.datetime.now()):
            when = "人工客服会在 5 分钟内接入，请稍候。"
        else:
            when = f"人工客服现在已下班（服务时间 {AGENT_HOURS[0]}:00–{AGENT_HOURS[1]}:00），上班后会第一时间联系您。"
        dispatcher.utter_message(text=f"已为您转接人工客服，工单号 {number}，刚才的对话已经附在工单里。{when}")
        return []
