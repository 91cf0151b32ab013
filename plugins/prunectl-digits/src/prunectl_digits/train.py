"""Train the digit models deterministically: ``python -m prunectl_digits.train OUT_DIR [--models mlp,cnn]``.

Writes, per model, ``NAME.pt`` (``{"state_dict", "model": {"factory": "digits:NAME", "args"}}``,
loadable with ``weights_only=True``) and ``NAME.json`` (its prunectl spec), and prints the
validation and test accuracy. Same arguments, same bytes.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from prunectl.tasks import evaluate

from .models import build, spec_for
from .task import DigitsTask

EPOCHS = {"mlp": 40, "cnn": 25}


def train_model(name: str, epochs: int | None = None, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = build(name)
    return DigitsTask().train(model, epochs=epochs or EPOCHS[name], seed=seed)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m prunectl_digits.train", description=__doc__.splitlines()[0])
    parser.add_argument("out_dir")
    parser.add_argument("--models", default="mlp,cnn", help="comma-separated: mlp, cnn")
    parser.add_argument("--epochs", type=int, help="override the per-model default")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # one thread: bit-identical results from run to run
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    task = DigitsTask()
    for name in args.models.split(","):
        model = train_model(name, args.epochs, args.seed)
        torch.save({"state_dict": model.state_dict(), "model": {"factory": f"digits:{name}", "args": {}}},
                   out / f"{name}.pt")
        (out / f"{name}.json").write_text(json.dumps(spec_for(name), indent=2) + "\n")
        print(f"{name}: validation {task.metric(model):.2f}%  test {evaluate(model, task.test_batches()):.2f}%  "
              f"-> {out / (name + '.pt')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
