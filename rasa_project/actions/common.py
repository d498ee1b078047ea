"""Helpers shared by the actions: formatting, the order-number check, the conversation summary."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any, List, Optional, Text

from rasa_sdk import Tracker

ORDER_ID_PATTERN = re.compile(r"(?<!\d)\d{10}(?!\d)")


def find_order_id(value: Any) -> Optional[Text]:
    """The 10-digit order number inside ``value`` (a slot value or the customer's free text)."""
    if value is None:
        return None
    match = ORDER_ID_PATTERN.search(re.sub(r"\s+", "", str(value)))
    return match.group(0) if match else None


def yuan(amount: float) -> Text:
    return f"¥{amount:,.2f}"


def when(moment: Optional[dt.datetime], now: Optional[dt.datetime] = None) -> Text:
    """A moment as a customer says it: 今天 14:05, 昨天 09:30, 3 天前, 05-18 10:00."""
    if moment is None:
        return "-"
    now = now or dt.datetime.now()
    days = (now.date() - moment.date()).days
    if days == 0:
        return f"今天 {moment:%H:%M}"
    if days == 1:
        return f"昨天 {moment:%H:%M}"
    if 1 < days <= 7:
        return f"{days} 天前"
    return f"{moment:%m-%d %H:%M}"


def recent_user_texts(tracker: Tracker, limit: int = 5) -> List[Text]:
    texts = [e.get("text") for e in tracker.events if e.get("event") == "user" and e.get("text")]
    return texts[-limit:]
