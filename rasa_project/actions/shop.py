"""Products and coupons."""

from __future__ import annotations

import datetime as dt
from typing import List, Optional, Text

from rasa_sdk import Action, Tracker
from rasa_sdk.events import EventType, SlotSet
from rasa_sdk.executor import CollectingDispatcher
from rasa_sdk.types import DomainDict

from rasa_project import db
from rasa_project.actions.common import yuan


def _latest_product(tracker: Tracker) -> Optional[Text]:
    """The product named in the latest message, else the one the conversation is about."""
    entity = next(tracker.get_latest_entity_values("product"), None)
    return entity or tracker.get_slot("product")


def match_product(products: List[db.Product], name: Optional[Text]) -> Optional[db.Product]:
    """The product ``name`` means: its exact name (synonyms are mapped to it by the NLU), else the one sharing the
    longest run of characters with it, at least two ("降噪蓝牙耳机" -> 蓝牙耳机, "运动手环" -> 智能手环)."""
    if not name:
        return None
    exact = next((p for p in products if p.name == name), None)
    if exact is not None:
        return exact

    def common_run(a: Text, b: Text) -> int:
        return max((k for i in range(len(a)) for k in range(1, len(a) - i + 1) if a[i : i + k] in b), default=0)

    scored = sorted(((common_run(p.name, name), -len(p.name), p.id, p) for p in products), reverse=True)
    best = scored[0] if scored else None
    return best[3] if best is not None and best[0] >= 2 else None


_CHINESE_DIGITS = {
    "一": 1,
    "二": 2,
    "两": 2,
    "俩": 2,
    "三": 3,
    "四": 4,
    "五": 5,
    "六": 6,
    "七": 7,
    "八": 8,
    "九": 9,
    "十": 10,
}


def parse_quantity(value: Optional[Text]) -> Optional[int]:
    """``"3"``, ``"３"``, ``"两"``, ``"十二"`` -> an integer from 1 to 999, else None."""
    import unicodedata

    text = unicodedata.normalize("NFKC", str(value or "")).strip()
    if text.isdigit():
        number = int(text)
    elif text and all(ch in _CHINESE_DIGITS for ch in text) and len(text) <= 3:
        digits = [_CHINESE_DIGITS[ch] for ch in text]
        if len(digits) == 1:
            number = digits[0]
        elif digits[0] == 10:  # 十二
            number = 10 + digits[1]
        elif digits[1] == 10:  # 二十, 二十三
            number = digits[0] * 10 + (digits[2] if len(digits) == 3 else 0)
        else:
            return None
    else:
        return None
    return number if 1 <= number <= 999 else None


class ActionProductInfo(Action):
    def name(self) -> Text:
        return "action_product_info"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict) -> List[EventType]:
        name = _latest_product(tracker)
        quantity = parse_quantity(next(tracker.get_latest_entity_values("quantity"), None))
        with db.session_scope() as session:
            products = session.query(db.Product).order_by(db.Product.id).all()
            product = match_product(products, name)
            if product is None:
                names = "、".join(p.name for p in products)
                prefix = f"暂时没有“{name}”这件商品。" if name else ""
                dispatcher.utter_message(text=f"{prefix}我们在售的商品有：{names}。您想了解哪一款？")
                return []
            if product.stock > 0:
                stock = f"现货 {product.stock} 件，16:00 前付款当天发货"
            else:
                stock = "暂时缺货，预计 3–5 天补货"
            price = yuan(product.price)
            if quantity and quantity > 1:
                enough = "" if product.stock >= quantity else f"（现货只有 {product.stock} 件）"
                price += f"，{quantity} 件共 {yuan(product.price * quantity)}{enough}"
            dispatcher.utter_message(text=f"{product.name}：{price}，{stock}。{product.description}。")
            return [SlotSet("product", product.name)]


def _available_coupons(session, now: dt.datetime) -> List[db.Coupon]:
    return session.query(db.Coupon).filter(db.Coupon.expires_at > now).order_by(db.Coupon.discount).all()


def _claimed_codes(session, sender_id: Text) -> set:
    rows = session.query(db.CouponClaim.coupon_code).filter(db.CouponClaim.sender_id == sender_id)
    return {code for (code,) in rows}


def _describe(coupon: db.Coupon) -> Text:
    spend = f"满 {coupon.min_spend:g} 减 {coupon.discount:g}" if coupon.min_spend else f"立减 {coupon.discount:g}"
    return f"· {coupon.title}（{coupon.code}）：{spend}，{coupon.expires_at:%m-%d} 前有效"


class ActionListCoupons(Action):
    def name(self) -> Text:
        return "action_list_coupons"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict) -> List[EventType]:
        with db.session_scope() as session:
            coupons = _available_coupons(session, dt.datetime.now())
            claimed = _claimed_codes(session, tracker.sender_id)
            if not coupons:
                dispatcher.utter_message(text="现在没有可领的优惠券，关注店铺首页，新活动上线会第一时间通知您。")
                return []
            lines = ["现在可以领取的优惠券："]
            lines += [_describe(c) + ("（已领取）" if c.code in claimed else "") for c in coupons]
            if all(c.code in claimed for c in coupons):
                lines.append("这些券您都已经领过了，下单时会自动抵扣。")
            elif tracker.active_loop_name:
                lines.append("办完手头这件事以后，说“领优惠券”就能一键领取。")
            else:
                lines.append("需要我帮您一键领取吗？")
        dispatcher.utter_message(text="\n".join(lines))
        return []


class ActionClaimCoupons(Action):
    def name(self) -> Text:
        return "action_claim_coupons"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: DomainDict) -> List[EventType]:
        text = (tracker.latest_message or {}).get("text") or ""
        if not any(ch.isalnum() for ch in text):
            # An emoji or punctuation alone is no "yes" (the NLU may still read it as affirm).
            dispatcher.utter_message(text="需要领取的话，请回复“好的”或“领取”。")
            return []
        now = dt.datetime.now()
        with db.session_scope() as session:
            claimed = _claimed_codes(session, tracker.sender_id)
            new = [c for c in _available_coupons(session, now) if c.code not in claimed]
            for coupon in new:
                session.add(db.CouponClaim(sender_id=tracker.sender_id, coupon_code=coupon.code, claimed_at=now))
            titles = "、".join(c.title for c in new)
        if new:
            dispatcher.utter_message(text=f"已为您领取 {len(new)} 张优惠券：{titles}。下单时会自动使用最优的一张。")
        else:
            dispatcher.utter_message(text="可领的优惠券您都已经领过了，下单时会自动抵扣。")
        return []
