"""The shop's database: orders, their logistics, products, coupons, returns, handoff tickets and identity checks.

The connection is a SQLAlchemy URL read from ``SHOP_DB_URL``; the default is a SQLite file next to
this module (``rasa_project/shop.db``, git-ignored). PostgreSQL works the same way::

    export SHOP_DB_URL=postgresql+psycopg2://shop:secret@db.internal:5432/shop

Create and seed it (idempotent: an existing, seeded database is left alone)::

    python -m rasa_project.db init          # create tables, seed demo data if empty
    python -m rasa_project.db init --reset  # drop everything and seed again
    python -m rasa_project.db show          # print the orders, coupons, returns, tickets

The seed's dates are relative to the moment it runs, so the 7-day return window of the demo
orders always means the same thing. Each order has the customer's phone number: the assistant shows
or changes an order only after the last four digits of it are given in the conversation.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, Iterator, List, Optional

from sqlalchemy import Boolean, Column, DateTime, Float, ForeignKey, Integer, String, Text, create_engine, func, inspect
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, declarative_base, relationship, sessionmaker

DB_URL_ENV = "SHOP_DB_URL"
DEFAULT_DB_PATH = Path(__file__).resolve().parent / "shop.db"
DEFAULT_DB_URL = f"sqlite:///{DEFAULT_DB_PATH}"

#: Days after delivery during which a return needs no reason (七天无理由退货).
RETURN_WINDOW_DAYS = 7
#: Failed identity checks of one order, over all conversations, after which the bot stops checking it for a day
#: (a conversation has its own, smaller limit: rasa_project/actions/identity.py).
ORDER_LOCK_FAILURES = 10
ORDER_LOCK_HOURS = 24

# Order statuses as the customer sees them.
STATUS_PENDING = "待发货"
STATUS_SHIPPED = "运输中"
STATUS_OUT_FOR_DELIVERY = "派送中"
STATUS_DELIVERED = "已签收"
STATUS_CANCELLED = "已取消"
STATUS_RETURNING = "退货处理中"

Base = declarative_base()


class Product(Base):
    __tablename__ = "products"

    id = Column(Integer, primary_key=True)
    name = Column(String(64), unique=True, nullable=False)  # canonical name, = the entity value
    price = Column(Float, nullable=False)
    stock = Column(Integer, nullable=False, default=0)
    description = Column(Text, nullable=False, default="")


class Order(Base):
    __tablename__ = "orders"

    order_id = Column(String(32), primary_key=True)
    customer = Column(String(64), nullable=False)
    product_id = Column(Integer, ForeignKey("products.id"), nullable=False)
    quantity = Column(Integer, nullable=False, default=1)
    amount = Column(Float, nullable=False)
    status = Column(String(16), nullable=False)
    created_at = Column(DateTime, nullable=False)
    shipped_at = Column(DateTime)
    delivered_at = Column(DateTime)
    carrier = Column(String(32))
    tracking_no = Column(String(64))
    phone = Column(String(20), nullable=False, default="")  # the customer's; never shown by the bot

    product = relationship("Product")
    events = relationship("LogisticsEvent", order_by="LogisticsEvent.time", back_populates="order")


class LogisticsEvent(Base):
    __tablename__ = "logistics_events"

    id = Column(Integer, primary_key=True)
    order_id = Column(String(32), ForeignKey("orders.order_id"), nullable=False, index=True)
    time = Column(DateTime, nullable=False)
    location = Column(String(64), nullable=False)
    description = Column(String(256), nullable=False)

    order = relationship("Order", back_populates="events")


class Coupon(Base):
    __tablename__ = "coupons"

    code = Column(String(32), primary_key=True)
    title = Column(String(64), nullable=False)
    discount = Column(Float, nullable=False)  # yuan off
    min_spend = Column(Float, nullable=False, default=0.0)
    expires_at = Column(DateTime, nullable=False)


class CouponClaim(Base):
    __tablename__ = "coupon_claims"

    id = Column(Integer, primary_key=True)
    sender_id = Column(String(255), nullable=False, index=True)
    coupon_code = Column(String(32), ForeignKey("coupons.code"), nullable=False)
    claimed_at = Column(DateTime, nullable=False, default=dt.datetime.now)

    coupon = relationship("Coupon")


class ReturnRequest(Base):
    __tablename__ = "return_requests"

    id = Column(Integer, primary_key=True)
    order_id = Column(String(32), ForeignKey("orders.order_id"), nullable=False, index=True)
    sender_id = Column(String(255), nullable=False)
    reason = Column(String(256), nullable=False)
    status = Column(String(16), nullable=False, default="待审核")
    created_at = Column(DateTime, nullable=False, default=dt.datetime.now)

    @property
    def number(self) -> str:
        return f"R{self.id:05d}"


class HandoffTicket(Base):
    __tablename__ = "handoff_tickets"

    id = Column(Integer, primary_key=True)
    sender_id = Column(String(255), nullable=False, index=True)
    summary = Column(Text, nullable=False, default="")
    created_at = Column(DateTime, nullable=False, default=dt.datetime.now)

    @property
    def number(self) -> str:
        return f"H{self.id:05d}"


class IdentityCheck(Base):
    """One answer to "the last four digits of the phone on the order" (also for order ids that do not exist)."""

    __tablename__ = "identity_checks"

    id = Column(Integer, primary_key=True)
    order_id = Column(String(32), nullable=False, index=True)
    sender_id = Column(String(255), nullable=False)
    ok = Column(Boolean, nullable=False)
    created_at = Column(DateTime, nullable=False, default=dt.datetime.now)


def phone_matches(order: Optional[Order], last4: Optional[str]) -> bool:
    return bool(order is not None and last4 and len(last4) == 4 and (order.phone or "").endswith(last4))


def record_identity_check(session: Session, order_id: str, sender_id: str, ok: bool) -> None:
    session.add(IdentityCheck(order_id=order_id, sender_id=sender_id[:255], ok=ok))


def order_locked(session: Session, order_id: str, now: Optional[dt.datetime] = None) -> bool:
    """True after ORDER_LOCK_FAILURES failed checks of ``order_id`` within ORDER_LOCK_HOURS, from any conversation."""
    since = (now or dt.datetime.now()) - dt.timedelta(hours=ORDER_LOCK_HOURS)
    failures = (
        session.query(func.count(IdentityCheck.id))
        .filter(IdentityCheck.order_id == order_id, IdentityCheck.ok.is_(False), IdentityCheck.created_at > since)
        .scalar()
    )
    return failures >= ORDER_LOCK_FAILURES


def mask_phone(phone: str) -> str:
    return phone[:3] + "****" + phone[-4:] if len(phone) >= 8 else "****"


# --------------------------------------------------------------------------- connection


def database_url() -> str:
    """The SQLAlchemy URL in ``SHOP_DB_URL``, or the SQLite default next to this module."""
    return os.environ.get(DB_URL_ENV, "").strip() or DEFAULT_DB_URL


_ENGINES: Dict[str, Engine] = {}


def get_engine(url: Optional[str] = None) -> Engine:
    """One engine per URL for the life of the process (the action server keeps its pool)."""
    url = url or database_url()
    if url not in _ENGINES:
        kwargs = {"future": True, "pool_pre_ping": True}
        if url.startswith("sqlite"):
            # The action server answers from several threads; SQLite must allow that.
            kwargs["connect_args"] = {"check_same_thread": False}
        _ENGINES[url] = create_engine(url, **kwargs)
    return _ENGINES[url]


@contextmanager
def session_scope(url: Optional[str] = None) -> Iterator[Session]:
    """A transaction: committed when the block ends, rolled back on an exception."""
    session = sessionmaker(bind=get_engine(url), expire_on_commit=False, future=True)()
    try:
        yield session
        session.commit()
    except Exception:
        session.rollback()
        raise
    finally:
        session.close()


# --------------------------------------------------------------------------- seed data

PRODUCTS = [
    # name (= canonical entity value), price, stock, description
    ("蓝牙耳机", 299.0, 120, "青禾 Air 降噪蓝牙耳机，续航 30 小时，支持双设备连接"),
    ("智能手环", 199.0, 45, "心率血氧监测，50 米防水，一次充电用 14 天"),
    ("充电宝", 129.0, 0, "20000 毫安，支持 22.5W 快充，可带上飞机"),
    ("保温杯", 89.0, 300, "316 不锈钢内胆，保温 12 小时，500 毫升"),
    ("电动牙刷", 159.0, 80, "声波震动，5 种清洁模式，送 2 个刷头"),
    ("空气炸锅", 359.0, 12, "5 升大容量，可视窗口，免翻面"),
    ("机械键盘", 399.0, 30, "87 键热插拔，茶轴，三模连接"),
    ("双肩包", 239.0, 60, "防泼水面料，可放 15.6 寸笔记本"),
]

COUPONS = [
    # code, title, yuan off, minimum spend, days until it expires
    ("NEW20", "新人专享券", 20.0, 99.0, 30),
    ("FULL50", "满 300 减 50", 50.0, 300.0, 14),
    ("AUDIO30", "耳机品类券", 30.0, 199.0, 7),
]


def _seed_orders(now: dt.datetime) -> List[dict]:
    day = dt.timedelta(days=1)
    hour = dt.timedelta(hours=1)
    return [
        dict(
            order_id="2405180031",
            customer="林女士",
            phone="13812345678",
            product="蓝牙耳机",
            quantity=1,
            status=STATUS_DELIVERED,
            created_at=now - 6 * day,
            shipped_at=now - 5 * day,
            delivered_at=now - 3 * day,
            carrier="顺丰速运",
            tracking_no="SF1402358876120",
            events=[
                (now - 5 * day, "杭州", "商家已发货，顺丰速运揽收"),
                (now - 4 * day, "上海", "到达上海转运中心"),
                (now - 3 * day - 4 * hour, "上海", "快递员正在派送"),
                (now - 3 * day, "上海", "已签收，签收人：本人"),
            ],
        ),
        dict(
            order_id="2405200117",
            customer="王先生",
            phone="13700001357",
            product="智能手环",
            quantity=1,
            status=STATUS_SHIPPED,
            created_at=now - 3 * day,
            shipped_at=now - 2 * day,
            delivered_at=None,
            carrier="中通快递",
            tracking_no="ZT7531902468",
            events=[
                (now - 2 * day, "杭州", "商家已发货，中通快递揽收"),
                (now - 1 * day, "南京", "到达南京分拨中心"),
                (now - 5 * hour, "南京", "离开南京分拨中心，发往北京"),
            ],
        ),
        dict(
            order_id="2405210422",
            customer="陈女士",
            phone="15900002468",
            product="空气炸锅",
            quantity=1,
            status=STATUS_PENDING,
            created_at=now - 1 * day,
            shipped_at=None,
            delivered_at=None,
            carrier=None,
            tracking_no=None,
            events=[],
        ),
        dict(
            order_id="2405150876",
            customer="林女士",
            phone="13812345678",
            product="保温杯",
            quantity=2,
            status=STATUS_DELIVERED,
            created_at=now - 24 * day,
            shipped_at=now - 23 * day,
            delivered_at=now - 20 * day,
            carrier="韵达快递",
            tracking_no="YD4300998812",
            events=[
                (now - 23 * day, "杭州", "商家已发货，韵达快递揽收"),
                (now - 20 * day, "广州", "已签收，签收人：快递柜"),
            ],
        ),
        dict(
            order_id="2405190555",
            customer="孙女士",
            phone="13500004826",
            product="机械键盘",
            quantity=1,
            status=STATUS_OUT_FOR_DELIVERY,
            created_at=now - 4 * day,
            shipped_at=now - 3 * day,
            delivered_at=None,
            carrier="京东物流",
            tracking_no="JDV002233445566",
            events=[
                (now - 3 * day, "杭州", "商家已发货，京东物流揽收"),
                (now - 1 * day, "成都", "到达成都双流分拣中心"),
                (now - 2 * hour, "成都", "快递员正在派送，电话 138****2046"),
            ],
        ),
        dict(
            order_id="2405220009",
            customer="周先生",
            phone="17700007913",
            product="电动牙刷",
            quantity=1,
            status=STATUS_CANCELLED,
            created_at=now - 2 * day,
            shipped_at=None,
            delivered_at=None,
            carrier=None,
            tracking_no=None,
            events=[],
        ),
    ]


class SchemaOutdated(RuntimeError):
    """The database was created by an older version of this module (a column is missing)."""


def schema_problem(url: Optional[str] = None) -> Optional[str]:
    """What is missing from existing tables, or None when they match this module (or do not exist yet)."""
    inspector = inspect(get_engine(url))
    for table in Base.metadata.sorted_tables:
        if inspector.has_table(table.name):
            present = {column["name"] for column in inspector.get_columns(table.name)}
            missing = [column.name for column in table.columns if column.name not in present]
            if missing:
                return f"the table {table.name} has no column {', '.join(missing)}"
    return None


def create_schema(url: Optional[str] = None) -> None:
    problem = schema_problem(url)
    if problem:
        raise SchemaOutdated(problem)
    Base.metadata.create_all(get_engine(url))


def seed(url: Optional[str] = None, now: Optional[dt.datetime] = None) -> bool:
    """Create the tables and fill them with the demo shop. Returns False when already seeded."""
    now = (now or dt.datetime.now()).replace(microsecond=0)
    create_schema(url)
    with session_scope(url) as session:
        if session.query(func.count(Product.id)).scalar():
            return False
        products = {}
        for name, price, stock, description in PRODUCTS:
            products[name] = Product(name=name, price=price, stock=stock, description=description)
            session.add(products[name])
        session.flush()
        for spec in _seed_orders(now):
            spec = dict(spec)
            events = spec.pop("events")
            product = products[spec.pop("product")]
            order = Order(product_id=product.id, amount=product.price * spec["quantity"], **spec)
            session.add(order)
            for time, location, description in events:
                session.add(
                    LogisticsEvent(order_id=order.order_id, time=time, location=location, description=description)
                )
        for code, title, discount, min_spend, days in COUPONS:
            session.add(
                Coupon(
                    code=code,
                    title=title,
                    discount=discount,
                    min_spend=min_spend,
                    expires_at=now + dt.timedelta(days=days),
                )
            )
    return True


def reset(url: Optional[str] = None) -> None:
    Base.metadata.drop_all(get_engine(url))
    seed(url)


def _redact(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def show(url: Optional[str] = None) -> None:
    with session_scope(url) as session:
        print(f"database: {_redact(url or database_url())}")
        for order in session.query(Order).order_by(Order.order_id):
            print(
                f"  order {order.order_id}  {order.product.name} x{order.quantity}  {order.status}  "
                f"{order.carrier or '-'} {order.tracking_no or ''}  phone {mask_phone(order.phone or '')}"
            )
        for coupon in session.query(Coupon).order_by(Coupon.code):
            print(f"  coupon {coupon.code}  {coupon.title}  expires {coupon.expires_at:%Y-%m-%d}")
        for claim in session.query(CouponClaim).order_by(CouponClaim.id):
            print(f"  claim  {claim.coupon_code} by {claim.sender_id} at {claim.claimed_at:%Y-%m-%d %H:%M}")
        for request in session.query(ReturnRequest).order_by(ReturnRequest.id):
            print(f"  return {request.number}  order {request.order_id}  {request.reason}  {request.status}")
        for ticket in session.query(HandoffTicket).order_by(HandoffTicket.id):
            print(f"  ticket {ticket.number}  {ticket.sender_id}  {ticket.summary[:60]}")


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rasa_project.db", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["init", "show"], help="init: create and seed; show: print contents")
    parser.add_argument("--reset", action="store_true", help="with init: drop all tables and seed again")
    parser.add_argument("--url", default=None, help=f"SQLAlchemy URL (default: ${DB_URL_ENV} or {DEFAULT_DB_URL})")
    args = parser.parse_args(argv)
    url = args.url or database_url()
    if args.command == "show":
        show(url)
        return 0
    if args.reset:
        reset(url)
        print(f"Shop database reset and seeded: {_redact(url)}")
        return 0
    try:
        created = seed(url)
    except SchemaOutdated as outdated:
        if url != DEFAULT_DB_URL:
            print(
                f"The shop database {_redact(url)} was made by an older version ({outdated}). Run "
                f"`python -m rasa_project.db init --reset --url ...` to re-create it (this deletes its data).",
                file=sys.stderr,
            )
            return 1
        reset(url)  # the demo database next to this module: its data is the seed
        print(
            f"The demo shop database was made by an older version ({outdated}): re-created and seeded: {_redact(url)}"
        )
        return 0
    print(f"Shop database {'created and seeded' if created else 'already seeded'}: {_redact(url)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
