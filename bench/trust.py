#!/usr/bin/env python3
"""What trust costs: co-signing, policies, provenance and SBOMs against plain verification.

    .venv/bin/python bench/trust.py [--size-mib 1024] [--rounds 5]

Builds a model directory (4 files, --size-mib in all) and a dataset of a quarter of that size
under bench/.data/trust/, then times, alternating rounds (bench/run.py's harness):

  verify-key      modelseal verify --public-key           (the baseline: one hashing pass)
  verify-policy   modelseal verify --policy (2 of 2 signers + require_provenance with claims)
  sign            modelseal sign (co-sign: verify, then add a signature; no rehash of the seal)
  sbom            modelseal sbom --public-key (verify + provenance + CycloneDX)
  prov-verify     modelseal provenance verify --public-key
  sha256sum       sha256sum over the model files (a peer: one hashing pass, one core)
and separately `provenance record` (seal + dataset digest + environment) against
`modelseal seal` + `sha256sum dataset`, the work it replaces.
Ratios are of medians, against verify-key unless said otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, BENCH_DIR)
from run import CpuMeter, alternate, report_noise, run, wait_for_idle, warm_page_cache  # noqa: E402

MIB = 1024 * 1024


def write_random(path: str, size: int, seed: int) -> None:
    """Random-looking bytes written fast: one urandom block, a counter stamped on each MiB."""
    block = bytearray(os.urandom(16)) * (MIB // 16)
    block[16:] = os.urandom(MIB - 16)
    with open(path, "wb") as handle:
        done = 0
        while done < size:
            block[:8] = (seed * 1_000_003 + done).to_bytes(8, "little")
            n = min(MIB, size - done)
            handle.write(block[:n])
            done += n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--no-wait", action="store_true", help="do not wait for an idle machine")
    args = ap.parse_args()
    bin_dir = os.path.dirname(sys.executable)
    ms = os.path.join(bin_dir, "modelseal")
    work = os.path.join(BENCH_DIR, ".data", "trust")
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    model, data = os.path.join(work, "fraud-model"), os.path.join(work, "train.bin")
    os.makedirs(model)
    part = args.size_mib * MIB // 4
    files = [os.path.join(model, f"w{i}.bin") for i in range(4)]
    for i, path in enumerate(files):
        write_random(path, part, i)
    write_random(data, args.size_mib * MIB // 4, 99)
    for who in ("trainer", "reviewer"):
        run([ms, "keygen", "--out", os.path.join(work, who), "-q"])
    key = {w: os.path.join(work, f"{w}.key") for w in ("trainer", "reviewer")}
    pub = {w: os.path.join(work, f"{w}.pub") for w in ("trainer", "reviewer")}
    record = [ms, "provenance", "record", "--model", model, "--key", key["trainer"],
              "--dataset", data, "--name", "fraud-v1", "-q", "--", "true"]  # fmt: skip
    run(record)
    run([ms, "sign", model, "--key", key["reviewer"], "--public-key", pub["trainer"], "-q"])
    digest = run(["sha256sum", data], capture=True).stdout.split()[0]
    policy = os.path.join(work, "policy.toml")
    with open(policy, "w") as handle:
        handle.write(
            f'[[signers]]\nname = "trainer"\npublic_key = "{pub["trainer"]}"\n'
            'models = ["fraud-*"]\n'
            f'[[signers]]\nname = "reviewer"\npublic_key = "{pub["reviewer"]}"\nmodels = ["*"]\n'
            '[[rules]]\nmodels = ["fraud-*"]\nthreshold = 2\nsigners = ["trainer", "reviewer"]\n'
            "require_provenance = true\n[rules.provenance]\n"
            f'dataset_digests = ["sha256:{digest}"]\n'
        )
    if not args.no_wait:
        wait_for_idle(120)
    warm_page_cache([*files, data])
    noise: dict[str, dict] = {}
    meter = CpuMeter()
    commands = {
        "verify-key": [ms, "verify", model, "--public-key", pub["trainer"], "-q"],
        "verify-policy": [ms, "verify", model, "--policy", policy, "-q"],
        # Co-signing with a key that already signed verifies and writes nothing: the cost of
        # the check a co-signer runs, without growing the seal round after round.
        "sign": [ms, "sign", model, "--key", key["reviewer"], "--public-key", pub["trainer"], "-q"],
        "sbom": [
            ms,
            "sbom",
            model,
            "--public-key",
            pub["trainer"],
            "-q",
            "-o",
            os.path.join(work, "sbom.json"),
        ],
        "prov-verify": [ms, "provenance", "verify", model, "--public-key", pub["trainer"], "-q"],
        "sha256sum": ["sha256sum", *files],
    }
    results = alternate(commands, args.rounds, "trust")
    report_noise("trust", meter, noise)
    base = statistics.median(r.wall for r in results["verify-key"])
    table = {}
    for name, runs in results.items():
        median = statistics.median(r.wall for r in runs)
        table[name] = {"median_s": round(median, 4), "ratio_to_verify_key": round(median / base, 3)}

    meter = CpuMeter()
    fresh = [ms, "provenance", "record", "--model", model, "--key", key["trainer"],
             "--dataset", data, "--name", "fraud-v1", "-q", "--", "true"]  # fmt: skip
    replaced = ["sh", "-c", f'"{ms}" seal "{model}" --key "{key["trainer"]}" --name fraud-v1 -q'
                f' && sha256sum "{data}" >/dev/null']  # fmt: skip
    record_results = alternate({"record": fresh, "seal+sha256sum": replaced}, args.rounds, "record")
    report_noise("record", meter, noise)
    rec = statistics.median(r.wall for r in record_results["record"])
    alt = statistics.median(r.wall for r in record_results["seal+sha256sum"])
    table["provenance-record"] = {
        "median_s": round(rec, 4),
        "ratio_to_seal_plus_sha256sum": round(rec / alt, 3),
    }
    table["seal+sha256sum"] = {"median_s": round(alt, 4)}
    print(
        json.dumps(
            {"size_mib": args.size_mib, "rounds": args.rounds, "results": table, "noise": noise},
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
