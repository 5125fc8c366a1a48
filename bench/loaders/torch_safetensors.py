"""Verified loading vs plain loading: torch.load, safetensors load_file, sharded safetensors.

    .venv/bin/python bench/loaders/torch_safetensors.py [--rounds 5] [--size-mib 512]

Builds (once) a state dict of float32 tensors of about --size-mib MiB under
bench/.data/loaders/torch_safetensors/, saved and sealed three ways: one torch file,
one safetensors file, and a sharded safetensors checkpoint (4 shards + index). Then,
with a warm page cache, it alternates rounds of: the plain framework load, the
verified load through modelseal.integrations, and `modelseal hash` of the same files
(one hashing pass, run as a child process), rotating their order each round. The
same hashing pass inside this process (`hash_model`, no interpreter start) is shown too,
and "capture": `open_verified` alone (verify while reading into memory, no loader), the
floor under any verified load that keeps the bytes it verified.

Target: verified <= plain + one hashing pass, i.e. (verified - plain) / hash <= 1.

Plain `safetensors.torch.load_file` maps the file and reads nothing until a tensor is
touched; the "plain eager" row (`safetensors.torch.load(bytes)`) reads everything, as
a verified load must.
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

import torch
from safetensors import torch as st

from modelseal.hashing import hash_model
from modelseal.integrations import safetensors as mst
from modelseal.integrations import torch as mtorch
from modelseal.loading import open_verified
from modelseal.signing import keys

HERE = Path(__file__).resolve().parent
DATA = HERE.parent / ".data" / "loaders" / "torch_safetensors"
TENSOR_MIB = 16


def find_modelseal(explicit: str | None) -> str:
    for candidate in (
        explicit,
        os.environ.get("MODELSEAL"),
        str(Path(sys.executable).with_name("modelseal")),
        str(HERE.parent.parent / ".venv" / "bin" / "modelseal"),
        shutil.which("modelseal"),
    ):
        if candidate and Path(candidate).is_file():
            return candidate
    sys.exit("modelseal executable not found (--modelseal, $MODELSEAL, venv, PATH)")


def build(data: Path, size_mib: int) -> dict[str, Path]:
    """The three sealed models and the key pair; kept when already built at this size."""
    paths = {
        "torch": data / "model.pt",
        "safetensors": data / "model.safetensors",
        "sharded": data / "sharded",
    }
    stamp = data / f"built-{size_mib}mib"
    if stamp.exists() and all(p.exists() for p in paths.values()):
        return paths
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir(parents=True)
    keys.write_keypair(data / "bench", keys.KeyAlgorithm.ECDSA_P256)
    generator = torch.Generator().manual_seed(0)
    rows = TENSOR_MIB * (1 << 20) // 4 // 1024
    count = max(1, size_mib // TENSOR_MIB)
    state = {f"layer{i}.weight": torch.randn(rows, 1024, generator=generator) for i in range(count)}
    key = data / "bench.key"
    mtorch.save(state, paths["torch"], key=key)
    mst.save_file(state, paths["safetensors"], key=key)
    shard = max(1, count // 4) * TENSOR_MIB * (1 << 20)
    mst.save_sharded(state, paths["sharded"], shard, key=key)
    stamp.touch()
    return paths


def files_of(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]


def warm(path: Path) -> None:
    for file in files_of(path):
        with open(file, "rb", buffering=0) as handle:
            while handle.read(16 << 20):
                pass


def timed(action: Callable[[], object]) -> float:
    gc.collect()
    start = time.perf_counter()
    result = action()
    elapsed = time.perf_counter() - start
    del result
    gc.collect()
    return elapsed


def plain_sharded(directory: Path) -> dict[str, torch.Tensor]:
    import json

    index = json.loads((directory / mst.INDEX_NAME).read_text())
    merged: dict[str, torch.Tensor] = {}
    for shard in sorted(set(index["weight_map"].values())):
        merged.update(st.load_file(directory / shard))
    return merged


def capture(path: Path, public: Path) -> None:
    with open_verified(path, public_keys=[public]):
        pass


def plain_eager(path: Path) -> dict[str, torch.Tensor]:
    return st.load(path.read_bytes())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--size-mib", type=int, default=512)
    parser.add_argument("--data-dir", type=Path, default=DATA)
    parser.add_argument("--modelseal", default=None, help="modelseal executable")
    args = parser.parse_args()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    modelseal_cli = find_modelseal(args.modelseal)
    paths = build(args.data_dir, args.size_mib)
    public = args.data_dir / "bench.pub"
    trust = {"public_keys": [public]}

    def hash_pass(path: Path) -> Callable[[], object]:
        command = [modelseal_cli, "hash", "-q", str(path)]
        return lambda: subprocess.run(command, check=True, stdout=subprocess.DEVNULL)

    targets: dict[str, dict[str, Callable[[], object]]] = {
        "torch.load": {
            "plain": lambda: torch.load(paths["torch"], weights_only=True),
            "verified": lambda: mtorch.load(paths["torch"], **trust),
            "hash": hash_pass(paths["torch"]),
            "hash in-process": lambda: hash_model(paths["torch"]),
            "capture": lambda: capture(paths["torch"], public),
        },
        "safetensors load_file": {
            "plain": lambda: st.load_file(paths["safetensors"]),
            "plain eager": lambda: plain_eager(paths["safetensors"]),
            "verified": lambda: mst.load_file(paths["safetensors"], **trust),
            "hash": hash_pass(paths["safetensors"]),
            "hash in-process": lambda: hash_model(paths["safetensors"]),
            "capture": lambda: capture(paths["safetensors"], public),
        },
        "safetensors sharded": {
            "plain": lambda: plain_sharded(paths["sharded"]),
            "verified": lambda: mst.load_sharded(paths["sharded"], **trust),
            "hash": hash_pass(paths["sharded"]),
            "hash in-process": lambda: hash_model(paths["sharded"]),
            "capture": lambda: capture(paths["sharded"], public),
        },
    }
    sizes = {name: sum(f.stat().st_size for f in files_of(path)) for name, path in paths.items()}
    for path in paths.values():
        warm(path)
    for actions in targets.values():  # one untimed run of each (imports, first faults)
        for action in actions.values():
            timed(action)
    times: dict[str, dict[str, list[float]]] = {
        target: {kind: [] for kind in actions} for target, actions in targets.items()
    }
    for round_no in range(args.rounds):
        for target, actions in targets.items():
            kinds = list(actions)
            shift = round_no % len(kinds)
            for kind in kinds[shift:] + kinds[:shift]:
                times[target][kind].append(timed(actions[kind]))

    print(
        f"torch {torch.__version__}, safetensors {__import__('safetensors').__version__}, "
        f"{os.cpu_count()} CPUs, "
        f"{args.rounds} rounds, warm page cache; medians in seconds"
    )
    sized = dict(
        zip(targets, (sizes["torch"], sizes["safetensors"], sizes["sharded"]), strict=True)
    )
    header = f"{'target':<24}{'MiB':>6}{'plain':>9}{'eager':>9}{'verified':>10}{'hash':>8}"
    header += (
        f"{'hash-in':>9}{'capture':>9}{'verif/plain':>13}{'(v-p)/hash':>12}{'(v-p)/hash-in':>15}"
    )
    print(header)
    for target, kinds in times.items():
        median = {kind: statistics.median(values) for kind, values in kinds.items()}
        plain, verified, hashed = median["plain"], median["verified"], median["hash"]
        inside = median["hash in-process"]
        eager = f"{median['plain eager']:9.3f}" if "plain eager" in median else f"{'-':>9}"
        print(
            f"{target:<24}{sized[target] / (1 << 20):6.0f}{plain:9.3f}{eager}{verified:10.3f}"
            f"{hashed:8.3f}{inside:9.3f}{median['capture']:9.3f}{verified / plain:13.2f}"
            f"{(verified - plain) / hashed:12.2f}{(verified - plain) / inside:15.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
