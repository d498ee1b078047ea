"""The objects a `rasa run` worker holds once its model is loaded, moved out of the garbage collector's way.

A served worker holds about 660,000 objects that live as long as it does (Rasa, TensorFlow, the policies and
the NLU components). Python's collector goes through all of them in each full (generation 2) collection,
which it starts by itself now and then under load: measured 0.7-0.8 s with the sample assistant, and the
worker answers nothing meanwhile, so every message in flight waits. ``gc.freeze()`` once the model is
loaded puts these objects in a permanent generation that collections skip (a full collection then takes
well under a millisecond); objects made later are collected as usual. The RequestGuard calls it when the
server has started (``freeze_gc: false`` in credentials.yml turns it off).
"""

from __future__ import annotations

import gc
import logging
import time

logger = logging.getLogger(__name__)


def freeze_loaded_objects() -> int:
    """Collects once, then freezes what is left; the number of objects frozen."""
    started = time.perf_counter()
    gc.collect()
    collected_ms = 1000 * (time.perf_counter() - started)
    gc.freeze()
    frozen = gc.get_freeze_count()
    logger.info(
        f"{frozen} objects of the loaded server moved out of the garbage collector's way (gc.freeze); "
        f"a full collection through them took {collected_ms:.0f} ms."
    )
    return frozen
