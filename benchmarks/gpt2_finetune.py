"""Fine-tuning time of the `scratch` GPT-2 fallback, by training precision and attention dropout.

    .venv/bin/python benchmarks/gpt2_finetune.py                         # SMP2017 train split, 2 epochs
    .venv/bin/python benchmarks/gpt2_finetune.py --dataset cais --epochs 1
    .venv/bin/python benchmarks/gpt2_finetune.py --train my_nlu.yml --variants fp32,bf16

`GPT2FewShotIntentClassifier` with `model: scratch` fine-tunes inside `rasa train`, and on a CPU that is most
of the training time of the `bert+gpt2` pipeline. Each variant trains the component exactly as `rasa train`
does (`inference: {backend: torch}`, so no ONNX export is timed; `fine_tune_early_stopping_patience: 0`, so every variant runs
the same epochs), in its own process, on the same prompts with the same seed, and reports the fine-tuning
time and the validation accuracy of the scored decision after each epoch:

* `fp32, attention dropout 0.1`: the component before `fine_tune_precision` and before scratch models dropped
  their attention dropout (the transformers default, 0.1);
* `fp32`: `fine_tune_precision: fp32`;
* `bf16, attention dropout 0.1`;
* `bf16`: `fine_tune_precision: bf16`, the default (`auto`) on CPUs with AVX-512 BF16 or AMX.

Writes benchmarks/results/gpt2_finetune.{json,md} (`--out`: another folder).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import _common as C  # noqa: E402
from benchmarks.datasets import DATASETS  # noqa: E402

# name: (fine_tune_precision, attention dropout of the scratch model)
VARIANTS = {
    "fp32, attention dropout 0.1": ("fp32", 0.1),
    "fp32": ("fp32", 0.0),
    "bf16, attention dropout 0.1": ("bf16", 0.1),
    "bf16": ("bf16", 0.0),
}
SHORT = {
    "fp32-dropout": "fp32, attention dropout 0.1",
    "fp32": "fp32",
    "bf16-dropout": "bf16, attention dropout 0.1",
    "bf16": "bf16",
}


def worker(train_file: Path, precision: str, attn_dropout: float, epochs: int, seed: int) -> Dict[str, Any]:
    """Train the component on ``train_file`` and return its fine-tuning report."""
    import tempfile

    import transformers
    from rasa.engine.graph import ExecutionContext, GraphSchema
    from rasa.engine.storage.local_model_storage import LocalModelStorage
    from rasa.engine.storage.resource import Resource
    from rasa.shared.nlu.training_data.loading import load_data

    from nlu_bert.classifiers.gpt2_fewshot_classifier import GPT2FewShotIntentClassifier

    if attn_dropout:  # the scratch GPT2Config as it was built before: transformers' default attention dropout
        built = transformers.GPT2Config.__init__

        def with_dropout(self: Any, *args: Any, **kwargs: Any) -> None:
            built(self, *args, **{**kwargs, "attn_pdrop": attn_dropout})

        transformers.GPT2Config.__init__ = with_dropout
    config = {
        **GPT2FewShotIntentClassifier.get_default_config(),
        "model": "scratch",
        "fine_tune": True,
        "fine_tune_epochs": epochs,
        "fine_tune_early_stopping_patience": 0,
        "fine_tune_precision": precision,
        "inference": {"backend": "torch"},
        "random_seed": seed,
    }
    with tempfile.TemporaryDirectory() as tmp:
        component = GPT2FewShotIntentClassifier.create(
            config, LocalModelStorage(Path(tmp)), Resource("gpt2"), ExecutionContext(GraphSchema({}), "gpt2_finetune")
        )
        started = time.perf_counter()
        component.train(load_data(str(train_file)))
        seconds = time.perf_counter() - started
        report = dict(component._report["fine_tune"])
        report["attention_dropout"] = float(component._model.config.attn_pdrop)
    report["train_seconds"] = round(seconds, 1)
    return report


def render(payload: Dict[str, Any]) -> str:
    epochs = payload["epochs"]
    header = ["variant", "fine-tuning s", "s per epoch", "× the first row's time"]
    header += [f"val accuracy after epoch {e}" for e in range(1, epochs + 1)] + ["loss after the last epoch"]
    rows = []
    base: Optional[float] = None
    for name, r in payload["variants"].items():
        if "error" in r:
            rows.append([name, f"failed: {r['error']}"] + [""] * (len(header) - 2))
            continue
        base = base or r["seconds"]
        history = r["history"]
        rows.append(
            [
                name,
                f"{r['seconds']:.0f}",
                f"{r['seconds'] / len(history):.0f}",
                f"{r['seconds'] / base:.2f}",
                *[f"{h['val_accuracy']:.3f}" for h in history],
                f"{history[-1]['loss']:.4f}",
            ]
        )
    first = next((r for r in payload["variants"].values() if "error" not in r), {})
    return "\n".join(
        [
            "## Scratch GPT-2 fallback: fine-tuning time by precision and attention dropout",
            "",
            f"Machine: {payload['machine']['cpu']}, {payload['machine']['cores_available']} cores "
            f"({', '.join(payload['machine']['cpu_flags'])}); load average {payload['machine']['load_average_at_start']} "
            f"at start. Data: {payload['data']} ({first.get('prompts_per_epoch', '?')} prompts per epoch, validation on "
            f"{first.get('validation_prompts', '?')}); {epochs} epochs, seed {payload['seed']}; each variant in its own "
            "process, one after the other.",
            "",
            C.markdown_table(header, rows),
            "",
            f"Command: `{payload['command']}`; {payload['seconds']:.0f} s.",
            "",
        ]
    )


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--dataset", default="smp2017", choices=sorted(DATASETS), help="train split of this dataset (default smp2017)"
    )
    parser.add_argument("--train", type=Path, help="your own Rasa NLU training file instead of --dataset")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--variants", default=",".join(SHORT), help=f"comma-separated subset of: {', '.join(SHORT)}")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--work", type=Path, default=C.WORK, help="where datasets are converted")
    parser.add_argument("--out", type=Path, default=C.RESULTS, help="folder of gpt2_finetune.{json,md}")
    parser.add_argument(
        "--worker", nargs=4, metavar=("TRAIN", "PRECISION", "DROPOUT", "EPOCHS"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.worker:
        train, precision, dropout, epochs = args.worker
        print(
            "RESULT " + json.dumps(worker(Path(train), precision, float(dropout), int(epochs), args.seed)), flush=True
        )
        return
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in names if v not in SHORT]
    if unknown or not names:
        parser.exit(2, f"unknown --variants {' '.join(unknown) or '(none given)'}: choose from {', '.join(SHORT)}\n")
    if args.epochs < 1:
        parser.exit(2, f"--epochs must be at least 1, got {args.epochs}\n")
    if args.train is not None and not args.train.is_file():
        parser.exit(2, f"--train {args.train} is not a file: give a Rasa NLU training file (YAML)\n")

    started = time.perf_counter()
    if args.train is not None:
        train_file, data = args.train.resolve(), str(args.train)
    else:
        from benchmarks.datasets import prepare_dataset

        train_file, _ = prepare_dataset(args.dataset, args.work / "data")
        data = f"{args.dataset} train split"
    payload: Dict[str, Any] = {
        "machine": C.machine_info(),
        "data": data,
        "epochs": args.epochs,
        "seed": args.seed,
        "command": " ".join(
            [".venv/bin/python benchmarks/gpt2_finetune.py", *(sys.argv[1:] if argv is None else argv)]
        ),
        "variants": {},
    }
    env = C.offline_env()
    for short in names:
        name = SHORT[short]
        precision, dropout = VARIANTS[name]
        C.log(f"{name}: fine-tuning {args.epochs} epochs")
        command = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--seed",
            str(args.seed),
            "--worker",
            str(train_file),
            precision,
            str(dropout),
            str(args.epochs),
        ]
        done = subprocess.run(command, capture_output=True, text=True, env=env)
        result = next((json.loads(line[7:]) for line in done.stdout.splitlines() if line.startswith("RESULT ")), None)
        if result is None:
            payload["variants"][name] = {
                "error": (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1][:200]
            }
            C.log(f"{name} failed:\n{done.stderr[-3000:]}")
            continue
        payload["variants"][name] = result
        C.log(f"{name}: {result['seconds']:.0f} s, val accuracy {[h['val_accuracy'] for h in result['history']]}")
    payload["seconds"] = time.perf_counter() - started
    markdown = render(payload)
    print(markdown)
    json_path, md_path = C.write_results("gpt2_finetune", payload, markdown, out_dir=args.out)
    C.log(f"wrote {json_path} and {md_path}")
    if any("error" in r for r in payload["variants"].values()):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
