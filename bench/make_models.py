#!/usr/bin/env python3
"""Build the benchmark models for modelseal (stdlib only).

Creates, under DATA_DIR (default: bench/.data/):

  multi/model-0000N-of-00008.bin   8 files x 256 MiB  (a multi-file model)
  single/model-2g.bin              1 file  x 2 GiB    (one big file)

The bytes are "random-ish": one 16 MiB block from os.urandom, reused for every
block of every file but with a distinct 16-byte header (file id + block
counter) stamped at the start of each block, so no two blocks are equal and
nothing is all zeros. Generation is therefore disk-bound, not RNG-bound.

A file that already exists with the right size is left alone (re-run is a
no-op); a file with a wrong size is rebuilt. Files are written to a temporary
name first and renamed, so an interrupted run never leaves a file that looks
complete.
"""

from __future__ import annotations

import argparse
import os
import struct
import sys
import time

MIB = 1024 * 1024
BLOCK = 16 * MIB

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
DEFAULT_DATA_DIR = os.path.join(BENCH_DIR, ".data")

MULTI_DIR = "multi"
MULTI_COUNT = 8
MULTI_SIZE = 256 * MIB
SINGLE_DIR = "single"
SINGLE_NAME = "model-2g.bin"
SINGLE_SIZE = 2048 * MIB


def model_layout(data_dir: str) -> dict:
    """Paths and sizes of the benchmark models (shared with run.py)."""
    multi = os.path.join(data_dir, MULTI_DIR)
    files = [
        (os.path.join(multi, f"model-{i + 1:05d}-of-{MULTI_COUNT:05d}.bin"), MULTI_SIZE)
        for i in range(MULTI_COUNT)
    ]
    single = os.path.join(data_dir, SINGLE_DIR, SINGLE_NAME)
    return {
        "multi_dir": multi,
        "multi_files": files,
        "single_file": single,
        "single_size": SINGLE_SIZE,
    }


def write_file(path: str, size: int, file_id: int, base: bytes) -> None:
    if os.path.isfile(path) and os.path.getsize(path) == size:
        print(f"  ok (exists)  {path}")
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".partial"
    buf = bytearray(base)
    t0 = time.perf_counter()
    with open(tmp, "wb", buffering=0) as f:
        written = 0
        counter = 0
        while written < size:
            n = min(BLOCK, size - written)
            struct.pack_into("<QQ", buf, 0, file_id, counter)
            f.write(memoryview(buf)[:n])
            written += n
            counter += 1
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dt = time.perf_counter() - t0
    print(f"  wrote {size / MIB:7.0f} MiB in {dt:5.1f}s  {path}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "data_dir",
        nargs="?",
        default=DEFAULT_DATA_DIR,
        help="where to build the models (default: bench/.data/)",
    )
    args = ap.parse_args(argv)
    data_dir = os.path.abspath(args.data_dir)
    layout = model_layout(data_dir)

    base = os.urandom(BLOCK)
    print(f"building benchmark models under {data_dir}")
    for i, (path, size) in enumerate(layout["multi_files"]):
        write_file(path, size, i + 1, base)
    write_file(layout["single_file"], layout["single_size"], 1000, base)

    # Anything else inside the model directories would be an unsigned file
    # and break verification; complain instead of silently benchmarking it.
    expected = {os.path.basename(p) for p, _ in layout["multi_files"]}
    extra = sorted(set(os.listdir(layout["multi_dir"])) - expected)
    if extra:
        print(f"warning: unexpected files in {layout['multi_dir']}: {extra}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
