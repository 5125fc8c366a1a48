#!/usr/bin/env python3
"""Loader benchmark: Keras 3 `.keras` and TensorFlow SavedModel, plain vs verified load.

    .venv/bin/python bench/loaders/tensorflow_keras.py [--rounds 5] [--size 8192]

Builds (once, kept under bench/.data/loaders/tensorflow_keras/) two models of
2 x SIZE x SIZE float32 weights (about 537 MB at the default 8192): a Keras
model of two Dense layers saved as `.keras`, and a tf.Module with the same two
kernels exported as a SavedModel. Both are sealed with a fresh ECDSA P-256 key.

Each round times, in this one process (TensorFlow imported once), the plain
framework load and the verified load through modelseal.integrations, plus one
`modelseal hash` child process of the same files (the one-hashing-pass
reference, interpreter start included); the order rotates from round to round.
Files are read once first to warm the page cache. Each loaded model is dropped
and garbage-collected outside the timed region (that is also when a verified
SavedModel's snapshot is removed).

Target: verified <= plain + one hashing pass, i.e. (verified - plain) / hash <= 1.
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

BENCH_DIR = Path(__file__).resolve().parent.parent
DATA = BENCH_DIR / ".data" / "loaders" / "tensorflow_keras"


def modelseal_cli() -> str:
    beside = Path(sys.executable).parent / "modelseal"
    return str(beside) if beside.exists() else "modelseal"


def build(size: int) -> tuple[Path, Path, Path]:
    """The sealed .keras file, the sealed SavedModel directory, and the public key."""
    import keras
    import numpy as np
    import tensorflow as tf

    from modelseal.integrations import keras as mkeras
    from modelseal.integrations import tensorflow as mtf
    from modelseal.signing import keys

    stamp = DATA / f"built-{size}"
    keras_path, saved_dir = DATA / "model.keras", DATA / "saved_model"
    public = DATA / "bench.pub"
    if stamp.exists():
        return keras_path, saved_dir, public
    shutil.rmtree(DATA, ignore_errors=True)
    DATA.mkdir(parents=True)
    private, public = keys.write_keypair(DATA / "bench", keys.KeyAlgorithm("ecdsa-p256"))

    rng = np.random.default_rng(0)
    kernels = [rng.standard_normal((size, size), dtype=np.float32) for _ in range(2)]
    model = keras.Sequential(
        [
            keras.Input((size,)),
            keras.layers.Dense(size, use_bias=False, name="first"),
            keras.layers.Dense(size, use_bias=False, name="second"),
        ]
    )
    for layer, kernel in zip(model.layers, kernels, strict=True):
        layer.set_weights([kernel])
    mkeras.save_model(model, keras_path, key=private)
    del model

    class Big(tf.Module):  # type: ignore[misc]
        def __init__(self, first: np.ndarray, second: np.ndarray) -> None:
            super().__init__()
            self.first = tf.Variable(first)
            self.second = tf.Variable(second)

        @tf.function(input_signature=[tf.TensorSpec([None, size], tf.float32)])
        def __call__(self, x: tf.Tensor) -> tf.Tensor:
            return tf.matmul(tf.matmul(x, self.first), self.second)

    module = Big(*kernels)
    mtf.saved_model_save(module, saved_dir, key=private)
    del module, kernels
    gc.collect()
    stamp.touch()
    return keras_path, saved_dir, public


def warm(path: Path) -> int:
    total = 0
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    for file in files:
        with open(file, "rb") as handle:
            while chunk := handle.read(16 << 20):
                total += len(chunk)
    return total


def timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    result = action()
    elapsed = time.perf_counter() - start
    del result
    gc.collect()
    return elapsed


def hash_pass(path: Path) -> None:
    command = [modelseal_cli(), "hash", "-q"]
    if path.is_dir():
        command += ["--ignore", "model.sig"]
    subprocess.run([*command, str(path)], check=True, stdout=subprocess.DEVNULL)


def bench(name: str, path: Path, actions: dict[str, Callable[[], object]], rounds: int) -> None:
    size = warm(path)
    for action in actions.values():  # warm-up, untimed (first traces, imports, allocator)
        action()
        gc.collect()
    times: dict[str, list[float]] = {label: [] for label in actions}
    labels = list(actions)
    for round_ in range(rounds):
        shift = round_ % len(labels)
        for label in labels[shift:] + labels[:shift]:
            times[label].append(timed(actions[label]))
    med = {label: statistics.median(values) for label, values in times.items()}
    print(f"\n{name}: {path} ({size / 1e6:.0f} MB), {rounds} rounds, medians")
    for label, values in times.items():
        print(f"  {label:<10} {med[label]:7.3f} s   (min {min(values):.3f})")
    ratio = med["verified"] / med["plain"]
    overhead = (med["verified"] - med["plain"]) / med["hash"]
    verdict = "met" if med["verified"] <= med["plain"] + med["hash"] else "NOT met"
    print(f"  verified / plain          {ratio:6.2f}")
    print(f"  (verified - plain) / hash {overhead:6.2f}   target <= 1.00: {verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--size", type=int, default=8192, help="Dense width (weights 2*N*N*4 B)")
    parser.add_argument("--only", choices=["keras", "tensorflow"])
    args = parser.parse_args()

    import keras
    import tensorflow as tf

    from modelseal.integrations import keras as mkeras
    from modelseal.integrations import tensorflow as mtf

    keras_path, saved_dir, public = build(args.size)
    print(f"tensorflow {tf.__version__}, keras {keras.__version__}, {os.cpu_count()} CPUs")
    if args.only in (None, "keras"):
        bench(
            "Keras .keras",
            keras_path,
            {
                "plain": lambda: keras.saving.load_model(keras_path),
                "verified": lambda: mkeras.load_model(keras_path, public_keys=public),
                "hash": lambda: hash_pass(keras_path),
            },
            args.rounds,
        )
    if args.only in (None, "tensorflow"):
        bench(
            "TensorFlow SavedModel",
            saved_dir,
            {
                "plain": lambda: tf.saved_model.load(str(saved_dir)),
                "verified": lambda: mtf.saved_model_load(saved_dir, public_keys=public),
                "hash": lambda: hash_pass(saved_dir),
            },
            args.rounds,
        )


if __name__ == "__main__":
    main()
