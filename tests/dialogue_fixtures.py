"""Conversations for the tracker tests: the sample assistant's stories and rules as trackers, and random
conversations with forms, slots, follow-up actions, rejected actions, rule-only turns, reverts, restarts and
new sessions."""

from __future__ import annotations

import random
from typing import Any, List

from rasa.shared.core.domain import Domain
from rasa.shared.core.events import (
    ActionExecuted,
    ActionExecutionRejected,
    ActionReverted,
    ActiveLoop,
    BotUttered,
    FollowupAction,
    Restarted,
    SessionStarted,
    SlotSet,
    UserUtteranceReverted,
    UserUttered,
)
from rasa.shared.core.trackers import DialogueStateTracker

from nlu_testing import REPO_ROOT


def story_trackers(domain: Domain) -> List[DialogueStateTracker]:
    from rasa.shared.core.generator import TrainingDataGenerator
    from rasa.shared.importers.importer import TrainingDataImporter

    importer = TrainingDataImporter.load_from_dict(
        domain_path=str(REPO_ROOT / "domain.yml"),
        training_data_paths=[str(REPO_ROOT / "data" / n) for n in ("stories.yml", "rules.yml")],
    )
    return TrainingDataGenerator(importer.get_stories(), domain, augmentation_factor=0).generate()


def random_conversation(domain: Domain, rng: random.Random, turns: int) -> List[Any]:
    intents = list(domain.intents)
    actions = [a for a in domain.action_names_or_texts if a.startswith(("utter_", "action_")) and a != "action_listen"]
    forms = list(domain.form_names)
    events: List[Any] = [ActionExecuted("action_session_start"), SessionStarted(), ActionExecuted("action_listen")]
    clock = 1000.0
    for _ in range(turns):
        clock += 1.0
        intent = rng.choice(intents)
        entities = [{"entity": "order_id", "value": "2405180031", "start": 0, "end": 10}] if rng.random() < 0.3 else []
        events.append(
            UserUttered(f"text {rng.random():.6f}", {"name": intent, "confidence": 1.0}, entities, timestamp=clock)
        )
        kind = rng.random()
        if kind < 0.07:
            events.append(UserUtteranceReverted(timestamp=clock + 0.1))
            continue
        if kind < 0.10:
            events.append(Restarted(timestamp=clock + 0.1))
            events.append(ActionExecuted("action_listen", timestamp=clock + 0.2))
            continue
        if kind < 0.12:
            events += [
                ActionExecuted("action_session_start", timestamp=clock + 0.1),
                SessionStarted(timestamp=clock + 0.2),
            ]
        for step in range(rng.randint(1, 3)):
            t = clock + 0.1 * (step + 1)
            choice = rng.random()
            if choice < 0.15 and forms:
                form = rng.choice(forms)
                events += [
                    ActionExecuted(form, timestamp=t),
                    ActiveLoop(form, timestamp=t + 0.01),
                    SlotSet("requested_slot", "order_id", timestamp=t + 0.02),
                ]
            elif choice < 0.25:
                events += [
                    ActionExecuted(rng.choice(forms) if forms else "action_listen", timestamp=t),
                    ActiveLoop(None, timestamp=t + 0.01),
                    SlotSet("requested_slot", None, timestamp=t + 0.02),
                ]
            elif choice < 0.32:
                events.append(ActionExecutionRejected(rng.choice(actions), timestamp=t))
            elif choice < 0.38:
                events.append(FollowupAction(rng.choice(actions), timestamp=t))
            elif choice < 0.44:
                events += [ActionExecuted(rng.choice(actions), timestamp=t), ActionReverted(timestamp=t + 0.01)]
            else:
                events.append(ActionExecuted(rng.choice(actions), timestamp=t, hide_rule_turn=rng.random() < 0.3))
                if rng.random() < 0.5:
                    events.append(BotUttered(f"reply {rng.random():.6f}", timestamp=t + 0.01))
                if rng.random() < 0.3:
                    events.append(
                        SlotSet(
                            rng.choice([s.name for s in domain.slots]),
                            rng.choice(["a", None, "status"]),
                            timestamp=t + 0.02,
                        )
                    )
        events.append(ActionExecuted("action_listen", timestamp=clock + 0.9))
    return events
