"""Train a small fraud classifier and record how it was made.

    python examples/models/train.py --data transactions.csv --out fraud-model --key trainer.key

The training runs inside `modelseal.provenance.record(...)`: when the block ends without an
error, the model directory is sealed (fraud-model/model.sig) and a signed SLSA v1 provenance
statement is written beside the seal (fraud-model/model.provenance.sig) with the git commit,
the digest of this script and of the dataset, the hyperparameters and the environment.
The dataset is generated (synthetic, deterministic) when the file does not exist yet.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
from pathlib import Path

import torch

from modelseal.provenance import record

FEATURES = ("amount", "hour", "foreign", "new_merchant")


def make_dataset(path: Path, rows: int = 2000, seed: int = 7) -> None:
    """Synthetic transactions: fraud is likelier for large, foreign, night-time payments."""
    rng = random.Random(seed)  # noqa: S311 - synthetic data, not a secret
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([*FEATURES, "fraud"])
        for _ in range(rows):
            amount, hour = rng.expovariate(1 / 80), rng.randrange(24)
            foreign, new = int(rng.random() < 0.2), int(rng.random() < 0.3)
            score = amount / 300 + foreign + new * 0.5 + (hour < 6) - 1.6
            writer.writerow(
                [f"{amount:.2f}", hour, foreign, new, int(rng.random() < 1 / (1 + 2.718**-score))]
            )


def load_dataset(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    x = torch.tensor([[float(r[f]) for f in FEATURES] for r in rows])
    y = torch.tensor([[float(r["fraud"])] for r in rows])
    return (x - x.mean(0)) / x.std(0), y


def train(data: Path, out: Path, epochs: int, lr: float, seed: int) -> float:
    torch.manual_seed(seed)
    x, y = load_dataset(data)
    model = torch.nn.Sequential(
        torch.nn.Linear(len(FEATURES), 8), torch.nn.ReLU(), torch.nn.Linear(8, 1)
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    for _ in range(epochs):
        optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
    out.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out / "model.pt")
    (out / "config.json").write_text(json.dumps({"features": FEATURES, "hidden": 8}) + "\n")
    return float(loss)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="training CSV (made if missing)")
    parser.add_argument("--out", type=Path, required=True, help="model directory to write")
    parser.add_argument("--key", required=True, help="private key that seals the model")
    parser.add_argument("--name", default="fraud-detector", help="model name in the seal")
    parser.add_argument("--builder-id", default="https://modelseal.dev/builders/local")
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--lr", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not args.data.exists():
        make_dataset(args.data)
    params = {"epochs": args.epochs, "lr": args.lr, "seed": args.seed}
    with record(
        args.out,
        key=args.key,
        name=args.name,
        datasets=[args.data],
        params=params,
        script=__file__,
        builder_id=args.builder_id,
    ) as run:
        loss = train(args.data, args.out, args.epochs, args.lr, args.seed)
        run.params["final_loss"] = round(loss, 6)
    print(f"trained {args.name}: loss {loss:.4f}; sealed with provenance in {args.out}")


if __name__ == "__main__":
    main()
