"""nlu_bert.admission: at most N messages in progress per worker, the others started in arrival order; the bound is
installed on Rasa's own MessageProcessor.handle_message and Agent.parse_message. The effect on latency under
load is measured by benchmarks/load_test.py --stages (docs/deploy.md, "Sizing")."""

from __future__ import annotations

import asyncio
from typing import List

import pytest
from rasa.core.agent import Agent
from rasa.core.processor import MessageProcessor

from nlu_bert import admission
from nlu_bert.http_guard import RequestGuard


@pytest.fixture
def bound():
    yield
    admission.install(0)  # no bound for the other tests of the session


async def burst(limit: int, n: int) -> tuple:
    admission.install(limit)
    inside, most, started = [0], [0], []

    async def handle(i: int) -> int:
        started.append(i)
        inside[0] += 1
        most[0] = max(most[0], inside[0])
        await asyncio.sleep(0.01)  # waits like a message does: the loop serves the others meanwhile
        await asyncio.sleep(0.01)
        inside[0] -= 1
        return i

    gated = admission._gated(handle)
    results = await asyncio.gather(*(gated(i) for i in range(n)))
    return results, most[0], started


def test_at_most_the_bound_in_progress_and_the_rest_in_arrival_order(bound: None) -> None:
    results, most, started = asyncio.run(burst(2, 8))
    assert results == list(range(8)) and most == 2 and started == list(range(8))
    assert admission.in_progress_limit() == 2


def test_zero_is_no_bound(bound: None) -> None:
    _, most, _ = asyncio.run(burst(0, 8))
    assert most == 8


def test_installed_once_on_rasas_message_handling(bound: None) -> None:
    async def install_twice() -> List[object]:
        admission.install(3)
        first = [MessageProcessor.handle_message, Agent.parse_message]
        admission.install(3)
        return first

    first = asyncio.run(install_twice())
    assert first == [MessageProcessor.handle_message, Agent.parse_message]  # not wrapped twice
    assert all(getattr(f, "_nlu_bert_gated", False) for f in first)


def test_the_bound_is_a_guard_setting() -> None:
    assert RequestGuard().max_concurrent_messages == 4
    with pytest.raises(ValueError, match="max_concurrent_messages"):
        RequestGuard(max_concurrent_messages=-1)
