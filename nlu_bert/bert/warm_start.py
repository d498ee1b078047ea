"""Warm starts of BertIntentClassifier: training continues from a previous model's weights instead of the backbone.

Two routes (docs/bert-intent-classifier.md, "Warm starts"):

* ``rasa train --finetune``: Rasa loads the previous model's component (``load``) and calls ``train`` with
  ``execution_context.is_finetuning``. Rasa has already set ``epochs`` to ``ceil(epochs x --epoch-fraction)``, and
  its FinetuningValidator has refused data with new labels before any component ran.
* ``warm_start_model``: a plain ``rasa train`` starts from the BERT of a previous model archive (a ``.tar.gz``, an
  unpacked model, or a folder of models: the newest). Rows of the intent and entity heads are copied for the labels
  both models have; a new intent's row starts at the mean features of its examples (weight imprinting), a new
  entity tag at random; it trains ``finetuning_epoch_fraction`` of ``epochs``.

A warm start reads meta.json (labels, entity tags, n-gram settings, backbone), the tokenizer and the trainable weights
(:data:`nlu_bert.archive.BERT_TRAINING_FILES`, kept with ``finetunable: true``). A ``scratch`` model's character
vocabulary grows by the characters the new data adds (new embedding rows). Imported at train time only (torch).
"""

from __future__ import annotations

import json
import logging
import math
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

import torch
from rasa.shared.exceptions import InvalidConfigException

from nlu_bert import archive, backbones, vocab
from nlu_bert.bert.model import Backbone, IntentModel, load_intent_model

logger = logging.getLogger(__name__)

COMPONENT = archive.BERT
KEY = "warm_start_model"
FIX_WEIGHTS = (
    "Train that model once more with a full `rasa train` and `finetunable: true` (the default), then warm-start "
    "from the new model."
)


@dataclass
class WarmStart:
    """Where training starts: the previous model's tokenizer and encoder, the config it trains with (``epochs``
    scaled) and :meth:`transfer`, the hook :func:`nlu_bert.bert.training.train` calls before the fit."""

    where: str
    route: str  # "finetune" (rasa train --finetune) or "warm_start_model"
    previous: IntentModel
    meta: Dict[str, Any]
    backbone: Backbone
    config: Dict[str, Any]
    vocab_added: int = 0

    def transfer(
        self,
        model: IntentModel,
        labels: List[str],
        label_ids: List[int],
        make_batch: Any,
        train_idx: List[int],
        val_idx: List[int],
        entities: Any,
    ) -> Dict[str, Any]:
        """Copy the previous heads into ``model`` (its encoder is the previous one already), imprint new intents;
        return what was done and the warm model's validation accuracy and loss before the fit."""
        from nlu_bert.bert.training import predict

        old_labels = list(self.meta["labels"])
        old_state = self.previous.state_dict()
        new_labels = [label for label in labels if label not in old_labels]
        with torch.no_grad():
            for name, tensor in model.state_dict().items():
                if not name.startswith(("encoder.", "classifier.", "entities.tagger.", "entities.crf.")):
                    if name in old_state and old_state[name].shape == tensor.shape:
                        tensor.copy_(old_state[name])
            _copy_rows(model.classifier, self.previous.classifier, labels, old_labels)
            if new_labels:
                _imprint(model, labels, new_labels, label_ids, make_batch, train_idx)
            new_tags = _copy_entity_head(model, self.previous, self.meta, entities)
        report: Dict[str, Any] = {
            "from": self.where,
            "route": self.route,
            "epochs": self.config["epochs"],
            "new_intents": new_labels,
            "dropped_intents": [label for label in old_labels if label not in labels],
            "new_entity_tags": new_tags,
            "vocab_added": self.vocab_added,
        }
        if val_idx:
            logits = predict(model, make_batch, val_idx, self.config["batch_size"], torch.device("cpu"))
            gold = torch.tensor([label_ids[i] for i in val_idx])
            report["initial_val_accuracy"] = round(float((logits.argmax(-1) == gold).float().mean()), 6)
            report["initial_val_loss"] = round(float(torch.nn.functional.cross_entropy(logits, gold)), 6)
        logger.info(
            f"{COMPONENT}: warm start from {self.where} ({self.route}): {len(labels) - len(new_labels)} intents kept"
            + (f", new: {', '.join(new_labels)}" if new_labels else "")
            + (f", validation accuracy before training {report['initial_val_accuracy']:.3f}" if val_idx else "")
            + f"; {self.config['epochs']} epochs"
        )
        return report


def begin(
    config: Mapping[str, Any], finetune_from: Optional[Path], resource_name: str, texts: List[str]
) -> Optional[WarmStart]:
    """The warm start the component's ``config`` and Rasa ask for, or None (train from the backbone).
    ``finetune_from``: the previous model's folder that Rasa loaded for ``rasa train --finetune``."""
    if finetune_from is not None:
        if config[KEY]:
            logger.info(f"{COMPONENT}: `rasa train --finetune` continues from the model Rasa loaded; `{KEY}` unused.")
        return _start(finetune_from, "the model given to `rasa train --finetune`", "finetune", dict(config), texts)
    if not config[KEY]:
        return None
    fraction = float(config["finetuning_epoch_fraction"])
    epochs = max(1, math.ceil(config["epochs"] * fraction))
    with tempfile.TemporaryDirectory(prefix="nlu_bert_warm_") as tmp:
        folder, where = locate(str(config[KEY]), resource_name, Path(tmp))
        return _start(folder, where, KEY, {**config, "epochs": epochs}, texts)


def locate(path_text: str, resource_name: str, tmp: Path) -> "tuple[Path, str]":
    """The BertIntentClassifier folder of the model ``path_text`` names (a .tar.gz is unpacked into ``tmp``, only
    that component), and a description of it for messages."""
    path = Path(path_text).expanduser()
    if not path.exists():
        raise InvalidConfigException(
            f"{COMPONENT}: `{KEY}` {path_text!r} does not exist (looked for {path.absolute()}). Set it to a Rasa model "
            "archive (models/<name>.tar.gz), an unpacked model folder or a folder of models, or remove the key to "
            "train from `model`."
        )
    if path.is_dir() and not (path / "components").is_dir() and not (path / archive.META_FILE).is_file():
        models = sorted(path.glob("*.tar.gz"), key=lambda p: (p.stat().st_mtime, p.name))
        if not models:
            raise InvalidConfigException(
                f"{COMPONENT}: `{KEY}` {path_text!r} is a folder without a Rasa model (no *.tar.gz, no "
                "components/). Set it to a model archive or an unpacked model folder."
            )
        path = models[-1]
    if path.is_file():
        _unpack_bert(path, tmp)
        root = tmp
    else:
        root = path
    if (root / archive.META_FILE).is_file() and not (root / "components").is_dir():
        folders = {root.name: root} if _component_of(root) == COMPONENT else {}  # a component's own folder
    else:
        folders = {p.name: p for p in sorted((root / "components").glob("*")) if _component_of(p) == COMPONENT}
    if not folders:
        raise InvalidConfigException(
            f"{COMPONENT}: `{KEY}` {str(path)!r} holds no {COMPONENT} model. Name a model trained with "
            f"{COMPONENT} (`rasa train` with it in the pipeline), or remove the key."
        )
    name = resource_name if resource_name in folders else sorted(folders)[0]
    if len(folders) > 1 and resource_name not in folders:
        logger.warning(f"{COMPONENT}: `{KEY}` holds {len(folders)} {COMPONENT} models; starting from {name}.")
    return folders[name], str(path) if folders[name] == root else f"{path} ({name})"


def _component_of(folder: Path) -> Optional[str]:
    try:
        return json.loads((folder / archive.META_FILE).read_text(encoding="utf-8")).get("component")
    except (OSError, ValueError, AttributeError):
        return None


def _unpack_bert(path: Path, target: Path) -> None:
    """The folders of a Rasa model archive that hold a meta.json of BertIntentClassifier (only those)."""
    from tarsafe import TarSafe

    try:
        with TarSafe.open(str(path), "r:gz") as tar:
            members = tar.getmembers()
            names = {m.name.lstrip("./"): m for m in members}
            keep = set()
            for name, member in names.items():
                parts = name.split("/")
                if len(parts) == 3 and parts[0] == "components" and parts[2] == archive.META_FILE:
                    stream = tar.extractfile(member)
                    meta = json.loads(stream.read().decode("utf-8")) if stream else {}
                    if isinstance(meta, dict) and meta.get("component") == COMPONENT:
                        keep.add("/".join(parts[:2]) + "/")
            chosen = [m for n, m in names.items() if any(n.startswith(k) for k in keep)]
            tar.extractall(str(target), members=chosen)
    except (tarfile.TarError, OSError, ValueError, EOFError) as e:
        raise InvalidConfigException(
            f"{COMPONENT}: `{KEY}` {str(path)!r} is not a readable Rasa model archive ({type(e).__name__}: {e}). "
            "Set it to a model that `rasa train` wrote."
        ) from None


def _start(folder: Path, where: str, route: str, config: Dict[str, Any], texts: List[str]) -> WarmStart:
    from transformers import AutoTokenizer

    meta = archive.read_meta(folder, COMPONENT)
    missing = [f for f in archive.BERT_TRAINING_FILES + [archive.TOKENIZER_DIR] if not (folder / f).exists()]
    if missing:
        raise archive.ModelArchiveError(
            f"{COMPONENT}: {where} holds no training weights ({missing[0]} is not in its archive): its archive keeps "
            f"only what its inference backend serves, which is not enough to continue training. {FIX_WEIGHTS}"
        )
    _check_compatible(meta, folder, where, config)
    previous = load_intent_model(folder, meta)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder / archive.TOKENIZER_DIR), local_files_only=True)
    except Exception as e:  # noqa: BLE001 - any damage gets the same message
        raise archive.damaged(COMPONENT, folder, f"the tokenizer: {type(e).__name__}: {e}") from None
    encoder = previous.encoder
    rows = encoder.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > rows:
        raise InvalidConfigException(
            f"{COMPONENT}: the tokenizer of {where} has {len(tokenizer)} tokens but its encoder {rows} embeddings: the "
            f"tokenizer does not belong to this backbone. {FIX_WEIGHTS}"
        )
    added = 0
    if backbones.is_scratch(config["model"]):
        known = tokenizer.get_vocab()
        new = [c for c in vocab.build_char_vocab(texts, fold=True) if c not in known]
        if new:
            old = [t for t, _ in sorted(known.items(), key=lambda item: item[1])]
            with tempfile.TemporaryDirectory(prefix="nlu_bert_vocab_") as tmp:
                tokenizer = vocab.make_tokenizer(old + new, Path(tmp), char_level=True)
            encoder.resize_token_embeddings(len(tokenizer))
            added = len(new)
    return WarmStart(where, route, previous, meta, Backbone(tokenizer, encoder), config, added)


def _check_compatible(meta: Mapping[str, Any], folder: Path, where: str, config: Mapping[str, Any]) -> None:
    """The previous model fits ``config``: the same backbone, n-gram table and (scratch) sizes, else an error that
    names the key."""
    from nlu_bert.bert.training import uses_ngrams

    backbone = meta.get("backbone") or (archive.read_report(folder).get("config") or {}).get("model")
    if backbone and backbone != config["model"]:
        raise InvalidConfigException(
            f"{COMPONENT}: {where} was trained from the backbone {backbone!r}, but `model` is {config['model']!r}. "
            f"Set `model: {backbone}` in config.yml to continue from it, or train without a warm start to change "
            "the backbone."
        )
    encoder = json.loads((folder / archive.BERT_ENCODER_CONFIG_FILE).read_text(encoding="utf-8"))
    checks = [("max_length", int(encoder.get("max_position_embeddings", 512)), config["max_length"], "at most")]
    if backbones.is_scratch(config["model"]):
        for key, name in (("hidden_size", "scratch_hidden_size"), ("num_hidden_layers", "scratch_num_layers")):
            checks.append((name, int(encoder.get(key, 0)), config[name], "equal to"))
        checks.append(
            ("scratch_num_heads", int(encoder.get("num_attention_heads", 0)), config["scratch_num_heads"], "equal to")
        )
    buckets = config["ngram_buckets"] if uses_ngrams(config) else 0
    checks.append(("ngram_buckets", int(meta.get("ngram_buckets", 0)), buckets, "equal to"))
    if buckets:
        checks.append(("ngram_dim", int(meta.get("ngram_dim", 0)), config["ngram_dim"], "equal to"))
    for key, old, new, relation in checks:
        if (new > old) if relation == "at most" else (new != old):
            shown = "off (ngram_features: false)" if key == "ngram_buckets" and not old else old
            raise InvalidConfigException(
                f"{COMPONENT}: {where} was trained with `{key}` {shown}, but the config gives {new}. Set `{key}` "
                f"{relation} {old} (or `ngram_features` as before) to continue from it, or train without a warm "
                "start."
            )


def _copy_rows(new: torch.nn.Linear, old: torch.nn.Linear, labels: List[str], old_labels: List[str]) -> None:
    for i, label in enumerate(labels):
        if label in old_labels:
            j = old_labels.index(label)
            new.weight[i].copy_(old.weight[j])
            new.bias[i].copy_(old.bias[j])


@torch.no_grad()
def _imprint(
    model: IntentModel, labels: List[str], new_labels: List[str], label_ids: List[int], make_batch: Any, idx: List[int]
) -> None:
    """A new intent's row: the direction from the mean features of all training examples to its examples' mean, as
    long as the old rows; its bias makes its examples' mean score what the old intents' means score."""
    model.eval()
    feats = []
    for b in range(0, len(idx), 64):
        batch = make_batch(idx[b : b + 64])
        hidden = model.encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        feats.append(model.features(hidden, batch["attention_mask"], batch.get("ngram_ids")))
    features, ids = torch.cat(feats), torch.tensor([label_ids[i] for i in idx])
    weight, bias = model.classifier.weight, model.classifier.bias
    old = [i for i, label in enumerate(labels) if label not in new_labels and bool((ids == i).any())]
    centre = features.mean(0)
    norm = weight[old].norm(dim=1).mean() if old else torch.tensor(1.0)
    own = [float(features[ids == i].mean(0) @ weight[i] + bias[i]) for i in old]
    target = sum(own) / len(own) if own else 0.0
    for label in new_labels:
        i = labels.index(label)
        rows = features[ids == i]
        if not len(rows):  # every example of the intent is in the validation split
            continue
        mean = rows.mean(0)
        direction = mean - centre
        weight[i] = direction / direction.norm().clamp(min=1e-6) * norm
        bias[i] = target - float(mean @ weight[i])


def _copy_entity_head(model: IntentModel, previous: IntentModel, meta: Mapping[str, Any], entities: Any) -> List[str]:
    """Tag rows (and CRF scores) of the tags both heads have; the new tags' names."""
    if model.entities is None or entities is None:
        return []
    from nlu_bert.bert.entities import EntitySpec

    new_names = entities.spec.tags.tag_names()
    if previous.entities is None or not meta.get("entities"):
        return new_names[1:]
    old_names = EntitySpec.from_meta(meta["entities"]).tags.tag_names()
    pairs = [(i, old_names.index(n)) for i, n in enumerate(new_names) if n in old_names]
    new, old = model.entities, previous.entities
    if new.tagger.in_features != old.tagger.in_features:
        return new_names[1:]
    for i, j in pairs:
        new.tagger.weight[i].copy_(old.tagger.weight[j])
        new.tagger.bias[i].copy_(old.tagger.bias[j])
    if new.crf is not None and old.crf is not None:
        for i, j in pairs:
            new.crf.start[i] = old.crf.start[j]
            new.crf.end[i] = old.crf.end[j]
            for k, m in pairs:
                new.crf.transitions[i, k] = old.crf.transitions[j, m]
    return [n for n in new_names if n not in old_names]
