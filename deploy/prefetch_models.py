"""Download the hub models a Rasa config names into the Hugging Face cache, the way training will read them.

    HF_ENDPOINT=https://hf-mirror.com python deploy/prefetch_models.py config.yml

For each nlu-bert component of the config whose `model` is a hub id (not `scratch`, not a local folder), it
loads the tokenizer and the model once with transformers (honouring the component's `revision` and
`cache_dir`), so exactly the files training needs land in HF_HOME. deploy/train.Dockerfile runs it at build
time with BAKE_MODELS=1; afterwards `rasa train` works with HF_HUB_OFFLINE=1.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import yaml

LOADERS = {
    "nlu_bert.BertIntentClassifier": "AutoModel",
    "nlu_bert.GPT2FewShotIntentClassifier": "AutoModelForCausalLM",
}


def hub_models(config: Path) -> List[Tuple[str, str, Dict[str, str]]]:
    """(component, hub id, from_pretrained kwargs) for every nlu-bert component that names a hub model."""
    data = yaml.safe_load(config.read_text(encoding="utf-8")) or {}
    out = []
    for component in data.get("pipeline") or []:
        name, model = component.get("name"), str(component.get("model") or "")
        if name not in LOADERS or not model or model.lower() == "scratch" or Path(os.path.expanduser(model)).is_dir():
            continue
        kwargs = {k: str(component[k]) for k in ("revision", "cache_dir") if component.get(k)}
        out.append((name, model, kwargs))
    return out


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("config", type=Path, nargs="?", default=Path("config.yml"))
    args = parser.parse_args(argv)
    import transformers

    models = hub_models(args.config)
    if not models:
        print(f"{args.config}: no nlu-bert component names a hub model; nothing to download")
        return 0
    for component, model, kwargs in models:
        print(f"{component}: {model} {kwargs or ''}".rstrip(), flush=True)
        transformers.AutoTokenizer.from_pretrained(model, **kwargs)
        getattr(transformers, LOADERS[component]).from_pretrained(model, **kwargs)
    print(f"cached in {os.environ.get('HF_HOME', '~/.cache/huggingface')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
