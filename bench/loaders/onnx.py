#!/usr/bin/env python3
"""Verified ONNX loading vs plain onnx / onnxruntime, on ~512 MiB of external initializers.

    .venv/bin/python bench/loaders/onnx.py [--rounds 5] [--mib 512] [--shard-mib 64]

Builds (once) bench/.data/loaders/onnx/model/: model.onnx + weights.bin holding N MatMul
weights of 4096x4096 float32 (64 MiB each), sealed as a directory with a fresh key. Then,
page cache warm, runs N rounds, each task in a fresh child process, the order rotating
from round to round:

- ort-plain      onnxruntime.InferenceSession(path, providers=CPU)
- ort-verified   modelseal.integrations.onnx.inference_session(path, public_keys=...)
- onnx-plain     onnx.load(path)
- onnx-verified  modelseal.integrations.onnx.onnx_load(path, public_keys=...)
- hash           `modelseal hash DIR` (its main(), in the child): one hashing pass

Each child imports everything first and times only the call (perf_counter); peak RSS
comes from wait4. Prints medians, verified/plain, and (verified - plain) / hash, against
the target verified <= plain + one hashing pass. With --shard-mib, the verified loads use a
second seal of the same directory made in shards (hashed on all cores), and the hashing
pass uses the same shards.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
# This file is named onnx.py: keep its directory off the path, or `import onnx` finds it.
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != HERE]
BENCH_DIR = os.path.dirname(HERE)
DATA_DIR = os.path.join(BENCH_DIR, ".data", "loaders", "onnx")
MIB = 1024 * 1024
D = 4096  # one weight: D x D float32 = 64 MiB

CHILD = r"""
import contextlib, io, json, os, sys, time
task, model_dir, public, seal, shard = sys.argv[1:6]
trust = {"public_keys": [public], "signature": seal or None}
path = os.path.join(model_dir, "model.onnx")
import numpy as np
import onnx
import onnxruntime as ort
from modelseal._cli import main as cli
from modelseal.integrations import onnx as monnx
x = np.ones((1, @D@), np.float32)
start = time.perf_counter()
if task == "ort-plain":
    out = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
elif task == "ort-verified":
    out = monnx.inference_session(path, **trust)
elif task == "onnx-plain":
    out = onnx.load(path)
elif task == "onnx-verified":
    out = monnx.onnx_load(path, **trust)
elif task == "hash":
    with contextlib.redirect_stdout(io.StringIO()):
        code = cli(["hash", model_dir] + (["--shard-size", shard] if shard else []))
    assert code == 0, code
seconds = time.perf_counter() - start
check = None
if task.startswith("ort"):
    check = float(out.run(None, {"x": x})[0].sum())
elif task.startswith("onnx"):
    check = sum(len(t.raw_data) for t in out.graph.initializer)
print(json.dumps({"seconds": seconds, "check": check}))
""".replace("@D@", str(D))

TASKS = ("ort-plain", "ort-verified", "onnx-plain", "onnx-verified", "hash")


def build(mib: int) -> list[str]:
    """The sealed model directory and the public key (kept when already built)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from modelseal.integrations import onnx as monnx
    from modelseal.signing import keys

    model_dir = os.path.join(DATA_DIR, "model")
    key_base = os.path.join(DATA_DIR, "signer")
    stamp = os.path.join(DATA_DIR, f"built-{mib}")
    if os.path.exists(stamp):
        return [model_dir, key_base + ".pub"]
    count = max(1, mib // 64)
    os.makedirs(model_dir, exist_ok=True)
    for name in os.listdir(model_dir):
        os.unlink(os.path.join(model_dir, name))
    for name in os.listdir(DATA_DIR):
        if name.startswith(("built-", "signer")):
            os.unlink(os.path.join(DATA_DIR, name))
    private, public = keys.write_keypair(key_base, keys.KeyAlgorithm("ecdsa-p256"))
    rng = np.random.default_rng(0)
    nodes, weights, previous = [], [], "x"
    for i in range(count):
        w = rng.standard_normal((D, D), dtype=np.float32) / 64
        weights.append(numpy_helper.from_array(w, f"w{i}"))
        nodes.append(helper.make_node("MatMul", [previous, f"w{i}"], [f"h{i}"]))
        previous = f"h{i}"
    graph = helper.make_graph(
        nodes,
        "bench",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, D])],
        [helper.make_tensor_value_info(previous, TensorProto.FLOAT, [1, D])],
        weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    monnx.onnx_save(
        model,
        os.path.join(model_dir, "model.onnx"),
        save_as_external_data=True,
        location="weights.bin",
        key=private,
    )
    del model, graph, weights
    onnx.checker.check_model(os.path.join(model_dir, "model.onnx"))
    open(stamp, "w").close()
    return [model_dir, str(public)]


def shard_seal(model_dir: str, shard_mib: int) -> str:
    """A second seal of the same directory, in shards mode (parallel on one big file)."""
    from modelseal import seal

    path = os.path.join(DATA_DIR, f"model-shards-{shard_mib}.sig")
    if not os.path.exists(path):
        seal(
            model_dir,
            key=os.path.join(DATA_DIR, "signer.key"),
            shard_size=shard_mib * MIB,
            signature=path,
        )
    return path


def run_child(task: str, model_dir: str, public: str, seal: str, shard: str) -> dict[str, float]:
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, task, model_dir, public, seal, shard],
            stdout=out,
            stderr=err,
            cwd=DATA_DIR,  # not this directory: its onnx.py would shadow onnx
        )
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        if child.returncode != 0:
            err.seek(0)
            raise SystemExit(f"{task} failed:\n{err.read().decode(errors='replace')}")
        out.seek(0)
        result: dict[str, float] = json.loads(out.read())
    result["rss_mib"] = usage.ru_maxrss / 1024
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--mib", type=int, default=512, help="size of the weights (MiB)")
    parser.add_argument(
        "--shard-mib",
        type=int,
        default=0,
        help="verify a seal made in shards of this size (MiB), hash in the same shards",
    )
    parser.add_argument("--build-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.build_only:
        print(json.dumps(build(args.mib)))
        return
    # Build in a child: a big parent would count in every child's peak RSS (kept over exec).
    built = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--build-only", "--mib", str(args.mib)],
        check=True,
        stdout=subprocess.PIPE,
    )
    model_dir, public = json.loads(built.stdout)
    seal = shard_seal(model_dir, args.shard_mib) if args.shard_mib else ""
    shard = str(args.shard_mib * MIB) if args.shard_mib else ""
    size = sum(os.path.getsize(os.path.join(model_dir, n)) for n in os.listdir(model_dir))
    for name in os.listdir(model_dir):  # warm the page cache
        with open(os.path.join(model_dir, name), "rb") as handle:
            while handle.read(16 * MIB):
                pass
    times: dict[str, list[float]] = {task: [] for task in TASKS}
    rss: dict[str, list[float]] = {task: [] for task in TASKS}
    checks: dict[str, set[object]] = {task: set() for task in TASKS}
    for task in TASKS:  # one untimed warm-up each
        run_child(task, model_dir, public, seal, shard)
    for round_ in range(args.rounds):
        order = TASKS[round_ % len(TASKS) :] + TASKS[: round_ % len(TASKS)]
        for task in order:
            result = run_child(task, model_dir, public, seal, shard)
            times[task].append(result["seconds"])
            rss[task].append(result["rss_mib"])
            checks[task].add(result["check"])
    if checks["ort-plain"] != checks["ort-verified"] or (
        checks["onnx-plain"] != checks["onnx-verified"]
    ):
        raise SystemExit(f"verified and plain loads differ: {checks}")

    median = {task: statistics.median(values) for task, values in times.items()}
    python = sys.version.split()[0]
    mode = f"shards of {args.shard_mib} MiB" if args.shard_mib else "files"
    print(f"model: {model_dir} ({size / MIB:.0f} MiB, seal: {mode}), {args.rounds} rounds")
    print(f"python {python}, {os.cpu_count()} CPUs")
    print(f"{'task':<15}{'median s':>10}{'min s':>9}{'peak RSS MiB':>14}")
    for task in TASKS:
        print(
            f"{task:<15}{median[task]:>10.3f}{min(times[task]):>9.3f}"
            f"{statistics.median(rss[task]):>14.0f}"
        )
    hash_s = median["hash"]
    for kind in ("ort", "onnx"):
        plain, verified = median[f"{kind}-plain"], median[f"{kind}-verified"]
        ok = verified <= plain + hash_s
        print(
            f"{kind}: verified/plain {verified / plain:.2f}, (verified - plain)/hash "
            f"{(verified - plain) / hash_s:.2f}; target verified <= plain + hash "
            f"({plain + hash_s:.3f} s): {'met' if ok else 'MISSED'}"
        )


if __name__ == "__main__":
    main()
