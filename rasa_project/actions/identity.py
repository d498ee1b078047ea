"""The second factor before an order is shown or changed: the last four digits of the phone on the order.

* The digits are asked for by both forms (slot ``phone_last4``) and checked against the database.
* A verified factor is kept for the conversation (slot ``verified_phone``, set only by these actions: no
  NLU mapping can fill it), so the customer's other orders with the same phone need no second check.
* A wrong factor shows nothing, not even whether the order exists; it counts as a try. After
  ``MAX_TRIES`` wrong tries the conversation can no longer see or change orders (slot ``verify_failures``).
* Across conversations, an order that failed ``db.ORDER_LOCK_FAILURES`` checks within a day is not
  checked any more that day, so a client that opens new conversations does not get more guesses.
"""

from __future__ import annotations

import re
from typing import Any, List, Optional, Text

from rasa_sdk import Tracker

from rasa_project import db
from rasa_project.actions.common import ORDER_ID_PATTERN

#: Wrong answers a conversation may give before orders are closed to it.
MAX_TRIES = 3
LOCKED_TEXT = (
    f"手机尾号已经核对失败 {MAX_TRIES} 次，为了保护订单信息，这次对话不能再查看或办理订单了。"
    "如需帮助，请输入“转人工”，由客服核实身份。"
)
ORDER_LOCKED_TEXT = (
    "这个订单最近核对失败的次数太多，为了保护订单信息，暂时不能在这里查看或办理。请输入“转人工”，由客服核实身份。"
)
NOT_VERIFIED_TEXT = (
    "为了保护您的信息，查看或办理订单前要先核对下单手机号的后四位。请告诉我订单号，例如“查一下订单 2405180031”。"
)
_MOBILE = re.compile(r"(?<!\d)1\d{10}(?!\d)")
_LAST4 = re.compile(r"(?<!\d)\d{4}(?!\d)")


def digits_from(value: Any) -> Optional[Text]:
    """The last four digits the customer gave: four digits, or a whole 11-digit mobile number."""
    text = re.sub(r"[\s\-]+", "", str(value or ""))
    mobile = _MOBILE.search(text)
    if mobile:
        return mobile.group(0)[-4:]
    found = _LAST4.findall(text)
    return found[0] if len(found) == 1 else None


def failures(tracker: Tracker) -> int:
    try:
        return int(float(tracker.get_slot("verify_failures") or 0))
    except (TypeError, ValueError):
        return MAX_TRIES  # a value no action wrote: treat the conversation as locked


def locked(tracker: Tracker) -> bool:
    return failures(tracker) >= MAX_TRIES


def verified_order(session: Any, tracker: Tracker, order_id: Optional[Text]) -> Optional[db.Order]:
    """The order when the conversation has verified the phone on it, else None (also for unknown ids)."""
    if not order_id or locked(tracker):
        return None
    order = session.get(db.Order, order_id)
    return order if db.phone_matches(order, tracker.get_slot("verified_phone")) else None


def order_ids_in(text: Optional[Text]) -> List[Text]:
    """Every distinct order number in a message, in order."""
    return list(dict.fromkeys(ORDER_ID_PATTERN.findall(text or "")))
