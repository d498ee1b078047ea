"""Opt-in: the action server gets the events of the conversation's last turns, not every event of it.

Rasa 3.6 sends the whole tracker to the action server for every custom action (and every form validation):
``RemoteAction._action_call_format`` puts ``tracker.current_state(EventVerbosity.ALL)`` into the request,
every event of the conversation turned into a dict, and the action server parses all of it again. At turn 100
of the sample assistant that is ~600 events per call (benchmarks/results/message_profile.md: "action server").

With ``events_last_turns: N`` in the action endpoint (endpoints.yml; Rasa keeps keys it does not know in
``EndpointConfig.kwargs``), the request carries only the events from the N-th last user message on; every other
field (slots, latest_message, latest_event_time, followup_action, paused, latest_input_channel, active_loop,
latest_action, the domain) is computed by Rasa from the whole conversation, as before. What an action sees
differently: ``tracker.events`` and the rasa_sdk helpers that scan it (``applied_events``,
``get_last_event_for``, ``events_after_latest_restart``, ``idx_after_latest_restart``) reach back N user turns and
no further. ``slots_to_validate`` (form validation: the slot events at the end) and ``get_latest_input_channel``
(the last user message) are unchanged. The sample assistant's actions read the events only for the last 5 user
texts of a handoff ticket (rasa_project/actions/common.py), so N >= 5 leaves them exact; see docs/deploy.md.

``install()`` (the RequestGuard calls it when the server starts) is idempotent; without the key, and for any value
that is not a whole number >= 1 (logged once), the request is Rasa's own; under another Rasa version it does
nothing.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional, Text

import rasa
from rasa.core.actions.action import RemoteAction
from rasa.shared.core.events import Event, UserUttered
from rasa.shared.core.trackers import DialogueStateTracker, EventVerbosity

logger = logging.getLogger(__name__)

KEY = "events_last_turns"
RASA_VERSION = "3.6.21"  # the Rasa whose RemoteAction._action_call_format this re-implements
_rasas = RemoteAction._action_call_format
_warned: set = set()
_installed = False


def last_turns(events: Any, turns: int) -> List[Event]:
    """The events from the ``turns``-th last user message on (all of them when there are fewer user messages)."""
    taken: List[Event] = []
    seen = 0
    for event in reversed(events):
        taken.append(event)
        if isinstance(event, UserUttered):
            seen += 1
            if seen == turns:
                break
    taken.reverse()
    return taken


def turns_setting(endpoint: Any) -> Optional[int]:
    """``events_last_turns`` of an action endpoint; None for none (or one that is not a whole number >= 1)."""
    value = getattr(endpoint, "kwargs", {}).get(KEY) if endpoint is not None else None
    if value is None:
        return None
    try:
        turns = int(str(value).strip())
    except ValueError:
        turns = 0
    if turns < 1:
        if repr(value) not in _warned:
            _warned.add(repr(value))
            logger.warning(f"action_endpoint: {KEY} must be a whole number >= 1, got {value!r}: every event is sent")
        return None
    return turns


def action_call_format(self: RemoteAction, tracker: DialogueStateTracker, domain: Any) -> Dict[Text, Any]:
    """Rasa 3.6.21's ``RemoteAction._action_call_format``, with only the last turns' events when asked to."""
    turns = turns_setting(self.action_endpoint)
    if turns is None:
        return _rasas(self, tracker, domain)
    tracker_state = tracker.current_state(EventVerbosity.NONE)  # every field but the events, from the whole tracker
    tracker_state["events"] = [event.as_dict() for event in last_turns(tracker.events, turns)]
    result = {
        "next_action": self._name,
        "sender_id": tracker.sender_id,
        "tracker": tracker_state,
        "version": rasa.__version__,
    }
    if not self._is_selective_domain_enabled() or domain.does_custom_action_explicitly_need_domain(self.name()):
        result["domain"] = domain.as_dict()
    return result


def install() -> None:
    """Custom actions get the last ``events_last_turns`` turns' events where the endpoint asks (idempotent). Under
    another Rasa than the one whose request this re-implements, nothing changes (with a warning)."""
    global _installed
    if _installed:
        return  # what wraps it since (benchmarks/stage_timing.py) stays
    if rasa.__version__ != RASA_VERSION:
        logger.warning(f"action_endpoint: {KEY} is ignored: it follows Rasa {RASA_VERSION}, this is {rasa.__version__}")
        return
    RemoteAction._action_call_format = action_call_format  # type: ignore[method-assign]
    _installed = True


def uninstall() -> None:
    """Rasa's own request again (tests)."""
    global _installed
    RemoteAction._action_call_format = _rasas  # type: ignore[method-assign]
    _installed = False
