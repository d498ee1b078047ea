#!/usr/bin/env python
"""Which profile can this machine train: ``hub`` (config.yml) or ``offline`` (config.offline.yml)?

``hub`` when both hub models of config.yml can be had: already in the Hugging Face cache, or
reachable at ``$HF_ENDPOINT`` (default https://huggingface.co) within ``--timeout`` seconds.
``HF_HUB_OFFLINE=1`` means the cache only. ``NLU_BERT_PROFILE=hub|offline`` forces the answer.

Prints the profile on stdout and one line saying why on stderr; never downloads a model.

    python scripts/choose_profile.py            # -> hub | offline
"""

from __future__ import annotations

import argparse
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import List, Optional, Tuple

HUB_MODELS = ("hfl/chinese-bert-wwm-ext", "qgyd2021/few_shot_intent_gpt2_base")
PROFILES = {"hub": "config.yml", "offline": "config.offline.yml"}
DEFAULT_ENDPOINT = "https://huggingface.co"


def _truthy(value: Optional[str]) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def hub_cache_dir() -> Path:
    """The hub cache as huggingface_hub resolves it (read here, at call time, from the environment)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HUGGINGFACE_HUB_CACHE"):
        return Path(os.environ["HUGGINGFACE_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "huggingface"
    )
    return Path(home).expanduser() / "hub"


def in_cache(repo_id: str) -> bool:
    """``config.json`` of ``repo_id`` is in the local hub cache (nothing else is checked)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - huggingface_hub comes with transformers
        return False
    found = try_to_load_from_cache(repo_id, "config.json", cache_dir=str(hub_cache_dir()))
    return isinstance(found, str) and Path(found).is_file()


def reachable(repo_id: str, endpoint: str, timeout: float) -> Tuple[bool, str]:
    url = f"{endpoint.rstrip('/')}/{repo_id}/resolve/main/config.json"
    request = urllib.request.Request(url, method="HEAD", headers={"User-Agent": "nlu-bert-quickstart"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return 200 <= response.status < 400, f"HTTP {response.status}"
    except urllib.error.HTTPError as error:
        return False, f"HTTP {error.code}"
    except Exception as error:  # noqa: BLE001 - URLError, timeout, connection refused, DNS ...
        reason = getattr(error, "reason", error)
        return False, type(error).__name__ + (f": {reason}" if str(reason) else "")


def choose(timeout: float = 5.0, models: Tuple[str, ...] = HUB_MODELS) -> Tuple[str, str]:
    """(profile, one-line reason)."""
    forced = os.environ.get("NLU_BERT_PROFILE", "").strip().lower()
    if forced:
        if forced not in PROFILES:
            raise SystemExit(f"NLU_BERT_PROFILE must be one of {sorted(PROFILES)}, got '{forced}'.")
        return forced, f"NLU_BERT_PROFILE={forced}"
    missing: List[str] = [m for m in models if not in_cache(m)]
    if not missing:
        return "hub", "both hub models are in the local Hugging Face cache"
    if _truthy(os.environ.get("HF_HUB_OFFLINE")):
        return "offline", f"HF_HUB_OFFLINE=1 and {', '.join(missing)} not in the cache ({hub_cache_dir()})"
    endpoint = os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT
    for model in missing:
        ok, detail = reachable(model, endpoint, timeout)
        if not ok:
            return "offline", f"{model} is neither cached nor reachable at {endpoint} ({detail})"
    return "hub", f"the hub models are reachable at {endpoint}"


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the hub (default 5)")
    parser.add_argument("--config", action="store_true", help="print the config file instead of the profile name")
    args = parser.parse_args(argv)
    profile, reason = choose(args.timeout)
    print(PROFILES[profile] if args.config else profile)
    print(f"profile: {profile} ({PROFILES[profile]}): {reason}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
