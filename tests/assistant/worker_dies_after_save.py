"""`rasa` whose process kills itself right after it stored a turn and before it answers, for one message text.

    NLU_BERT_DIE_AFTER_SAVE=<text> python -m tests.assistant.worker_dies_after_save run ... (the arguments of `rasa`)

test_topology.py runs its workers with it: the worker that handles a message with exactly that text stores the
turn in the tracker store and then gets SIGKILL, the moment where nginx's retry used to store the turn twice.
Every other message is Rasa's as usual.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any


def install(text: str) -> None:
    from rasa.core.processor import MessageProcessor

    original = MessageProcessor.save_tracker

    async def save_tracker(self: Any, tracker: Any) -> None:
        await original(self, tracker)
        if tracker.latest_message is not None and tracker.latest_message.text == text:
            os.kill(os.getpid(), signal.SIGKILL)

    MessageProcessor.save_tracker = save_tracker


def main() -> None:
    text = os.environ.get("NLU_BERT_DIE_AFTER_SAVE")
    if text:
        install(text)
    from rasa.__main__ import main as rasa_main

    sys.argv = ["rasa", *sys.argv[1:]]
    rasa_main()


if __name__ == "__main__":
    main()
