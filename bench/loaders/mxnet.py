"""Verified loading vs plain loading for MXNet: SymbolBlock.imports, load_parameters, nd.load.

    .venv-mxnet/bin/python bench/loaders/mxnet.py [--rounds 5] [--width 5600] [--layers 4]

Builds (once) a HybridSequential of --layers Dense(width x width) layers (default about
500 MB of float32 parameters) under bench/.data/loaders/mxnet/: exported and sealed as a
prefix set (`export/big-symbol.json`, `export/big-0000.params`, `export/big.sig`), and
saved with `save_parameters` and sealed as one file (`big.params`, `big.params.sig`).
Then, with a warm page cache, it alternates rounds of: the plain MXNet load, the verified
load through modelseal.integrations.mxnet, and `modelseal hash` of the parameter file (one
hashing pass, run as a child process), rotating their order each round. The same hashing
pass inside this process (`hash_model`, no interpreter start) is shown too.

Target: verified <= plain + one hashing pass, i.e. (verified - plain) / hash <= 1.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import os
import shutil
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from modelseal.hashing import hash_model
from modelseal.integrations import mxnet as mmx
from modelseal.sealing import seal
from modelseal.signing import keys

HERE = Path(__file__).resolve().parent
DATA = HERE.parent / ".data" / "loaders" / "mxnet"

# This file is named mxnet.py and `python bench/loaders/mxnet.py` puts its directory first
# on sys.path: take it off, so that `mxnet` is MXNet and not this script.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
mx: Any = importlib.import_module("mxnet")
gluon: Any = mx.gluon


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


def make_net(width: int, layers: int) -> Any:
    net = gluon.nn.HybridSequential(prefix="big_")
    with net.name_scope():
        for i in range(layers):
            net.add(gluon.nn.Dense(width, in_units=width, prefix=f"d{i}_"))
    return net


def build(data: Path, width: int, layers: int) -> dict[str, Path]:
    """The sealed prefix set, the sealed parameter file and the key pair (kept when built)."""
    paths = {
        "prefix": data / "export" / "big",
        "symbol": data / "export" / "big-symbol.json",
        "exported": data / "export" / "big-0000.params",
        "params": data / "big.params",
        "public": data / "bench.pub",
    }
    stamp = data / f"built-{layers}x{width}"
    if stamp.exists() and all(p.exists() for name, p in paths.items() if name != "prefix"):
        return paths
    shutil.rmtree(data, ignore_errors=True)
    (data / "export").mkdir(parents=True)
    private, _ = keys.write_keypair(data / "bench", keys.KeyAlgorithm.ECDSA_P256)
    mx.random.seed(0)
    net = make_net(width, layers)
    net.initialize(mx.init.Uniform())
    net.hybridize()
    net(mx.nd.ones((1, width))).wait_to_read()
    mmx.export(net, paths["prefix"], key=private)
    net.save_parameters(str(paths["params"]))
    seal(paths["params"], key=private)
    stamp.touch()
    return paths


def warm(paths: list[Path]) -> None:
    for file in paths:
        with open(file, "rb", buffering=0) as handle:
            while handle.read(16 << 20):
                pass


def timed(action: Callable[[], object]) -> float:
    gc.collect()
    start = time.perf_counter()
    result = action()
    mx.nd.waitall()
    elapsed = time.perf_counter() - start
    del result
    gc.collect()
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--width", type=int, default=5600)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--data-dir", type=Path, default=DATA)
    parser.add_argument("--modelseal", default=None, help="modelseal executable")
    args = parser.parse_args()
    warnings.simplefilter("ignore", UserWarning)  # SymbolBlock.imports: "Cannot decide type"
    modelseal_cli = find_modelseal(args.modelseal)
    paths = build(args.data_dir, args.width, args.layers)
    trust = {"public_keys": [paths["public"]]}

    def hash_pass(path: Path) -> Callable[[], object]:
        command = [modelseal_cli, "hash", "-q", str(path)]
        return lambda: subprocess.run(command, check=True, stdout=subprocess.DEVNULL)

    def plain_load_parameters() -> object:
        net = make_net(args.width, args.layers)
        net.load_parameters(str(paths["params"]))
        return net

    def verified_load_parameters() -> object:
        net = make_net(args.width, args.layers)
        mmx.load_parameters(net, paths["params"], **trust)
        return net

    targets: dict[str, dict[str, Callable[[], object]]] = {
        "SymbolBlock.imports": {
            "plain": lambda: gluon.nn.SymbolBlock.imports(
                str(paths["symbol"]), ["data"], str(paths["exported"])
            ),
            "verified": lambda: mmx.symbolblock_imports(
                paths["symbol"], ["data"], paths["exported"], **trust
            ),
            "hash": hash_pass(paths["exported"]),
            "hash in-process": lambda: hash_model(paths["exported"]),
        },
        "Block.load_parameters": {
            "plain": plain_load_parameters,
            "verified": verified_load_parameters,
            "hash": hash_pass(paths["params"]),
            "hash in-process": lambda: hash_model(paths["params"]),
        },
        "nd.load": {
            "plain": lambda: mx.nd.load(str(paths["params"])),
            "verified": lambda: mmx.nd_load(paths["params"], **trust),
            "hash": hash_pass(paths["params"]),
            "hash in-process": lambda: hash_model(paths["params"]),
        },
    }
    sizes = {
        "SymbolBlock.imports": paths["exported"].stat().st_size + paths["symbol"].stat().st_size,
        "Block.load_parameters": paths["params"].stat().st_size,
        "nd.load": paths["params"].stat().st_size,
    }
    warm([paths["symbol"], paths["exported"], paths["params"]])
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
        f"mxnet {mx.__version__}, {os.cpu_count()} CPUs, {args.rounds} rounds, "
        "warm page cache; medians in seconds"
    )
    header = f"{'target':<24}{'MB':>6}{'plain':>9}{'verified':>10}{'hash':>8}{'hash-in':>9}"
    header += f"{'verif/plain':>13}{'(v-p)/hash':>12}{'(v-p)/hash-in':>15}"
    print(header)
    for target, kinds in times.items():
        median = {kind: statistics.median(values) for kind, values in kinds.items()}
        plain, verified = median["plain"], median["verified"]
        hashed, hashed_in = median["hash"], median["hash in-process"]
        print(
            f"{target:<24}{sizes[target] / 1e6:>6.0f}{plain:>9.3f}{verified:>10.3f}"
            f"{hashed:>8.3f}{hashed_in:>9.3f}{verified / plain:>13.2f}"
            f"{(verified - plain) / hashed:>12.2f}{(verified - plain) / hashed_in:>15.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
