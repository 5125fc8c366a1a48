#!/usr/bin/env python3
"""modelseal benchmark: modelseal vs upstream model_signing vs sha256sum/openssl.

Stdlib only. Run with the project's venv python after bench/make_models.py:

    .venv/bin/python bench/make_models.py && .venv/bin/python bench/run.py

See bench/README.md for what is measured and the targets. Results are printed
as a table and written as JSON to bench/.data/results.json (see --json).

Every child is started with stdout/stderr sent to /dev/null (or to a temporary
file when its output is needed) and reaped with os.wait4(), which gives its
wall time (perf_counter around spawn+reap) and CPU time. Peak RSS is taken in
separate untimed runs under GNU `/usr/bin/time -v` (see measure_rss). A
non-zero exit is an error that aborts the run, never a fast result.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_DIR = os.path.dirname(BENCH_DIR)
sys.path.insert(0, BENCH_DIR)
from make_models import DEFAULT_DATA_DIR, model_layout  # noqa: E402

MIB = 1024 * 1024

# Targets. RSS: 64 MB read as 64 MiB = 65536 KiB (`time -v` kbytes).
TARGET_MULTI_RATIO = 0.70  # modelseal verify / upstream verify, 8 x 256 MiB dir
TARGET_SINGLE_RATIO = 0.55  # modelseal shards verify / upstream default verify, 2 GiB
TARGET_THROUGHPUT_RATIO = 0.80  # modelseal hash bytes/s / openssl speed -multi
TARGET_VERSION_S = 0.15  # modelseal --version wall time, median
TARGET_RSS_KIB = 64 * 1024  # modelseal verify of the 2 GiB file, peak RSS

DEFAULT_SHARD_SIZES_MIB = (16, 64, 256)


class BenchError(RuntimeError):
    pass


# --------------------------------------------------------------------------
# running children


class Result:
    __slots__ = ("argv", "rc", "stderr", "stdout", "sys", "user", "wall")

    def __init__(self, argv, wall, user, sys_, rc, stdout=None, stderr=None):
        self.argv = argv
        self.wall = wall
        self.user = user
        self.sys = sys_
        self.rc = rc
        self.stdout = stdout
        self.stderr = stderr


def _cmd_str(argv) -> str:
    return " ".join(argv)


def run(argv, *, capture=False, check=True, expect_fail=False) -> Result:
    """Run argv, return wall and CPU time. capture=True keeps stdout+stderr text.

    check=True: a non-zero exit raises BenchError (with the child's stderr,
    re-running it with stderr captured if it was not captured).
    expect_fail=True: a zero exit raises instead.
    """
    with contextlib.ExitStack() as stack:
        if capture:
            out_f = stack.enter_context(tempfile.TemporaryFile())
            err_f = stack.enter_context(tempfile.TemporaryFile())
        else:
            out_f = err_f = subprocess.DEVNULL
        t0 = time.perf_counter()
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out_f, stderr=err_f)
        _, status, ru = os.wait4(p.pid, 0)
        t1 = time.perf_counter()
        rc = os.waitstatus_to_exitcode(status)
        p.returncode = rc  # already reaped: keep Popen from waiting again
        stdout = stderr = None
        if capture:
            out_f.seek(0)
            err_f.seek(0)
            stdout = out_f.read().decode("utf-8", "replace")
            stderr = err_f.read().decode("utf-8", "replace")
    res = Result(argv, t1 - t0, ru.ru_utime, ru.ru_stime, rc, stdout, stderr)
    if expect_fail:
        if rc == 0:
            raise BenchError(f"expected a failure but got exit 0: {_cmd_str(argv)}")
    elif check and rc != 0:
        if stderr is None:
            again = run(argv, capture=True, check=False)
            stderr = (again.stderr or "") + (again.stdout or "")
        raise BenchError(
            f"command failed (exit {rc}): {_cmd_str(argv)}\n"
            f"--- output ---\n{stderr.strip()[-4000:]}"
        )
    return res


def _descendants_rss_kib(root: int) -> int:
    """Sum of VmRSS (KiB) over root and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                data = f.read()
        except OSError:
            continue
        # pid (comm) state ppid ... ; comm may contain spaces/parens
        rest = data[data.rfind(b")") + 2 :].split()
        children.setdefault(int(rest[1]), []).append(int(name))
    total = 0
    stack = [root]
    while stack:
        pid = stack.pop()
        total += _rss_kib(pid)
        stack.extend(children.get(pid, ()))
    return total


TIME_BIN = "/usr/bin/time"


def measure_rss(argv) -> dict:
    """Run argv once (untimed) and return its peak RSS.

    ru_maxrss of a child forked from this Python harness starts at the
    harness's own RSS (Linux carries the pre-exec high-water mark across
    exec), so a Python parent cannot see a child smaller than itself. Hence
    the child is started under GNU `/usr/bin/time -v` (a small C program;
    Debian package `time`) and its "Maximum resident set size" is used.
    Meanwhile /proc is sampled every ~5 ms for the summed RSS of the tool's
    whole process tree, which catches worker processes (ru_maxrss reports
    only the largest single process).
    """
    have_time = _is_exe(TIME_BIN)
    full = [TIME_BIN, "-v", *argv] if have_time else list(argv)
    peak = [0]
    stop = threading.Event()
    pid_box = [0]

    def sampler():
        while not stop.is_set():
            try:
                total = _descendants_rss_kib(pid_box[0])
                if have_time:  # the tool is time's child: leave time itself out
                    total -= _rss_kib(pid_box[0])
                peak[0] = max(peak[0], total)
            except Exception:
                pass
            stop.wait(0.005)

    with tempfile.TemporaryFile() as err_f:
        p = subprocess.Popen(
            full, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err_f
        )
        pid_box[0] = p.pid
        t = threading.Thread(target=sampler, daemon=True)
        t.start()
        _, status, ru = os.wait4(p.pid, 0)
        stop.set()
        t.join()
        rc = os.waitstatus_to_exitcode(status)
        p.returncode = rc
        err_f.seek(0)
        err = err_f.read().decode("utf-8", "replace")
    if rc != 0:
        raise BenchError(
            f"command failed (exit {rc}): {_cmd_str(full)}\n--- output ---\n{err.strip()[-4000:]}"
        )
    if have_time:
        m = re.search(r"Maximum resident set size \(kbytes\):\s*(\d+)", err)
        if not m:
            raise BenchError(f"could not parse `{TIME_BIN} -v` output:\n{err[-2000:]}")
        maxrss, how = int(m.group(1)), f"{TIME_BIN} -v"
    else:
        maxrss, how = ru.ru_maxrss, "wait4 ru_maxrss (no /usr/bin/time: floor = harness RSS)"
    return {"max_rss_kib": maxrss, "method": how, "tree_peak_rss_kib_sampled": peak[0]}


def _rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


# --------------------------------------------------------------------------
# tool discovery


def _is_exe(path: str | None) -> bool:
    return bool(path) and os.path.isfile(path) and os.access(path, os.X_OK)


def find_tool(name: str, env_var: str, explicit: str | None) -> tuple[str | None, str]:
    """Return (path, how-found). Order: --option, $ENV, next to this python,
    the project's .venv, $PATH."""
    if explicit:
        if not _is_exe(explicit):
            raise BenchError(f"{name}: --option path is not an executable: {explicit}")
        return os.path.abspath(explicit), "command line"
    env = os.environ.get(env_var)
    if env:
        path = env if os.sep in env else shutil.which(env)
        if not _is_exe(path):
            raise BenchError(f"{name}: ${env_var}={env!r} is not an executable")
        return os.path.abspath(path), f"${env_var}"
    for cand, how in (
        (os.path.join(os.path.dirname(sys.executable), name), "beside this python"),
        (os.path.join(REPO_DIR, ".venv", "bin", name), "project .venv"),
        (shutil.which(name), "$PATH"),
    ):
        if _is_exe(cand):
            return os.path.abspath(cand), how
    return None, "not found"


def first_line(argv) -> str:
    try:
        r = run(argv, capture=True, check=False)
    except OSError as e:
        return f"<{e}>"
    text = (r.stdout or "").strip() or (r.stderr or "").strip()
    return text.splitlines()[0] if text else f"<exit {r.rc}>"


# --------------------------------------------------------------------------
# measurement helpers


def warm_page_cache(paths) -> float:
    t0 = time.perf_counter()
    buf = bytearray(16 * MIB)
    for p in paths:
        with open(p, "rb", buffering=0) as f:
            while f.readinto(buf):
                pass
    return time.perf_counter() - t0


def summarize(results: list[Result], nbytes: int | None = None) -> dict:
    walls = [r.wall for r in results]
    d = {
        "median_s": statistics.median(walls),
        "min_s": min(walls),
        "samples_s": [round(w, 4) for w in walls],
        "cpu_median_s": statistics.median(r.user + r.sys for r in results),
    }
    if nbytes:
        d["bytes"] = nbytes
        d["mb_per_s_median"] = nbytes / d["median_s"] / 1e6
        d["mb_per_s_best"] = nbytes / d["min_s"] / 1e6
    return d


def alternate(commands: dict[str, list[str]], rounds: int, label: str) -> dict[str, list[Result]]:
    """One untimed warm-up run of each command, then `rounds` rounds running
    every command once per round, rotating the order each round."""
    names = list(commands)
    for n in names:
        run(commands[n])  # warm-up + correctness (exit code) check
    out: dict[str, list[Result]] = {n: [] for n in names}
    for r in range(rounds):
        k = r % len(names)
        order = names[k:] + names[:k]
        for n in order:
            out[n].append(run(commands[n]))
        line = "  ".join(f"{n}={out[n][-1].wall:.3f}s" for n in names)
        print(f"  [{label}] round {r + 1}/{rounds}: {line}", flush=True)
    return out


def ratios(a: list[Result], b: list[Result]) -> dict:
    """a/b wall-time ratios: of the medians, of the minimums, and the median
    of the per-round ratios (a and b ran back to back in each round, so the
    paired figure is the least sensitive to drifting machine speed)."""
    wa, wb = [r.wall for r in a], [r.wall for r in b]
    return {
        "ratio_median": statistics.median(wa) / statistics.median(wb),
        "ratio_min": min(wa) / min(wb),
        "ratio_paired_median": statistics.median(x / y for x, y in zip(wa, wb, strict=True)),
    }


class CpuMeter:
    """CPU used on the whole machine by processes other than this harness and
    its children during a section: a noise indicator (another job running
    alongside the benchmark makes every figure unreliable)."""

    def __init__(self) -> None:
        self.tick = os.sysconf("SC_CLK_TCK")
        self.start = self._snap()

    @staticmethod
    def _own() -> float:
        t = os.times()
        return t.user + t.system + t.children_user + t.children_system

    def _snap(self):
        busy = steal = 0.0
        try:
            with open("/proc/stat") as f:
                v = [int(x) for x in f.readline().split()[1:]]
            # user nice system idle iowait irq softirq steal ...
            busy = (v[0] + v[1] + v[2] + v[5] + v[6]) / self.tick
            steal = v[7] / self.tick if len(v) > 7 else 0.0
        except (OSError, ValueError, IndexError):
            pass
        return time.perf_counter(), busy, steal, self._own()

    def stop(self) -> dict:
        w1, b1, s1, o1 = self._snap()
        w0, b0, s0, o0 = self.start
        cap = max(w1 - w0, 1e-9) * (os.cpu_count() or 1)
        foreign = max(0.0, (b1 - b0) - (o1 - o0))
        return {
            "wall_s": w1 - w0,
            "foreign_cpu_s": foreign,
            "foreign_pct_of_capacity": 100.0 * foreign / cap,
            "steal_pct_of_capacity": 100.0 * (s1 - s0) / cap,
        }


def report_noise(label: str, meter: CpuMeter, store: dict) -> None:
    n = meter.stop()
    store[label] = n
    warn = (
        "  <-- WARNING: machine busy, figures unreliable"
        if (n["foreign_pct_of_capacity"] > 5 or n["steal_pct_of_capacity"] > 5)
        else ""
    )
    print(
        f"  background CPU (other processes) {n['foreign_pct_of_capacity']:.1f}%, "
        f"steal {n['steal_pct_of_capacity']:.1f}% of capacity{warn}"
    )


def wait_for_idle(limit_s: float) -> None:
    """Wait (at most limit_s) until other processes use < 5% of the CPUs."""
    t_end = time.perf_counter() + limit_s
    while True:
        m = CpuMeter()
        time.sleep(2.0)
        pct = m.stop()["foreign_pct_of_capacity"]
        if pct < 5:
            print(f"\nmachine idle (background CPU {pct:.1f}%)")
            return
        if time.perf_counter() >= t_end:
            print(f"\nwarning: machine still busy after {limit_s:.0f}s (background CPU {pct:.0f}%)")
            return
        print(f"  waiting for an idle machine: background CPU {pct:.0f}%", flush=True)


def parse_openssl_speed(text: str, block: int = 16384) -> dict:
    """Aggregate sha256 rate at `block` bytes from `openssl speed -multi N`.

    Primary: the summary table line `sha256  <v>k <v>k ...` (k = 1000 bytes/s)
    whose columns are the block sizes listed in the children's `+H:` lines
    (or, without -multi, in the `type  16 bytes ...` header).
    Cross-check: the sum of the children's `+F:` lines (bytes/s).
    """
    sizes = None
    m = re.search(r"^Got: \+H:([0-9:]+) from", text, re.M)
    if m:
        sizes = [int(x) for x in m.group(1).split(":")]
    else:
        m = re.search(r"^type\s+(.*bytes.*)$", text, re.M)
        if m:
            sizes = [int(x) for x in re.findall(r"(\d+)\s+bytes", m.group(1))]
    if not sizes or block not in sizes:
        raise BenchError(f"openssl speed: no {block}-byte column in output:\n{text[-2000:]}")
    col = sizes.index(block)

    table_bps = None
    for line in text.splitlines():
        toks = line.split()
        if (
            len(toks) == len(sizes) + 1
            and toks[0] == "sha256"
            and all(t.endswith("k") for t in toks[1:])
        ):
            table_bps = float(toks[1 + col][:-1]) * 1000.0
    children = [
        float(m.group(1).split(":")[col])
        for m in re.finditer(r"^Got: \+F:\d+:sha256:([0-9.:]+) from", text, re.M)
    ]
    sum_bps = sum(children) if children else None
    if table_bps is None and sum_bps is None:
        raise BenchError(f"openssl speed: could not find the sha256 line:\n{text[-2000:]}")
    return {
        "block_bytes": block,
        "bytes_per_s": table_bps if table_bps is not None else sum_bps,
        "table_bytes_per_s": table_bps,
        "children_sum_bytes_per_s": sum_bps,
        "children_bytes_per_s": children,
    }


# --------------------------------------------------------------------------
# main


def fmt_s(x):
    return "-" if x is None else f"{x:.3f}"


def fmt_ratio(x):
    return "-" if x is None else f"{x:.3f}"


def fmt_mib(kib):
    return "-" if kib is None else f"{kib / 1024:.1f}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="modelseal benchmark (see bench/README.md)")
    ap.add_argument(
        "--data-dir",
        default=DEFAULT_DATA_DIR,
        help="models from make_models.py (default bench/.data)",
    )
    ap.add_argument("--json", default=None, help="results file (default DATA_DIR/results.json)")
    ap.add_argument("--rounds", type=int, default=5, help="timed rounds per comparison (default 5)")
    ap.add_argument("--version-runs", type=int, default=20, help="runs of --version (default 20)")
    ap.add_argument(
        "--shard-sizes",
        default=",".join(str(s) for s in DEFAULT_SHARD_SIZES_MIB),
        help="MiB shard sizes to try for the 2 GiB file; the fastest is used (default 16,64,256)",
    )
    ap.add_argument(
        "--modelseal", default=None, help="modelseal executable (else $MODELSEAL, venv, PATH)"
    )
    ap.add_argument(
        "--model-signing",
        default=None,
        help="upstream model_signing (else $MODEL_SIGNING, venv, PATH)",
    )
    ap.add_argument(
        "--peers-only",
        action="store_true",
        help="measure the peers only (no modelseal needed)",
    )
    ap.add_argument(
        "--no-sha256sum",
        action="store_true",
        help="skip the (slow, single-threaded) sha256sum rows",
    )
    ap.add_argument(
        "--wait-idle",
        type=float,
        default=60,
        metavar="S",
        help="before timing, wait up to S seconds for other processes to go quiet (default 60)",
    )
    ap.add_argument(
        "--trial-rounds", type=int, default=3, help="rounds of the shard-size trials (default 3)"
    )
    ap.add_argument(
        "--rss-runs", type=int, default=2, help="untimed peak-RSS runs per tool (default 2)"
    )
    ap.add_argument(
        "--openssl-speed-full",
        action="store_true",
        help="run the full `openssl speed -multi N -evp sha256` table once (18 s) instead of "
        "`-bytes 16384` interleaved with `modelseal hash` every round",
    )
    ap.add_argument("--strict", action="store_true", help="exit 1 if any target FAILs")
    args = ap.parse_args(argv)
    try:
        return bench(args)
    except BenchError as e:
        print(f"\nbench error: {e}", file=sys.stderr)
        return 2


def bench(args) -> int:
    t_start = time.perf_counter()
    data_dir = os.path.abspath(args.data_dir)
    json_path = os.path.abspath(args.json or os.path.join(data_dir, "results.json"))
    layout = model_layout(data_dir)
    multi_dir = layout["multi_dir"]
    multi_files = [p for p, _ in layout["multi_files"]]
    single = layout["single_file"]
    for p, size in layout["multi_files"] + [(single, layout["single_size"])]:
        if not (os.path.isfile(p) and os.path.getsize(p) == size):
            raise BenchError(
                f"missing or wrong-sized model file {p}: run bench/make_models.py first"
            )
    extra = sorted(set(os.listdir(multi_dir)) - {os.path.basename(p) for p in multi_files})
    if extra:
        raise BenchError(f"unexpected files in {multi_dir} (would be unsigned): {extra}")
    multi_bytes = sum(s for _, s in layout["multi_files"])
    single_bytes = layout["single_size"]
    nproc = os.cpu_count() or 1
    shard_sizes = [int(x) * MIB for x in args.shard_sizes.split(",") if x.strip()]

    ms, ms_how = find_tool("modelseal", "MODELSEAL", args.modelseal)
    if args.peers_only:
        ms, ms_how = None, "skipped (--peers-only)"
    up, up_how = find_tool("model_signing", "MODEL_SIGNING", args.model_signing)
    if up is None:
        raise BenchError(
            "upstream `model_signing` not found: set MODEL_SIGNING=/path/to/model_signing, "
            "or install `model-signing` and `pyopenssl` into the project's .venv "
            "(the test extras do), or put it on PATH"
        )
    if ms is None and not args.peers_only:
        raise BenchError(
            "`modelseal` not found (looked at $MODELSEAL, beside this python, .venv/bin, PATH); "
            "install the project (pip install -e .) or pass --peers-only for the peer figures"
        )
    for tool in ("openssl", "sha256sum", "xargs"):
        if shutil.which(tool) is None:
            raise BenchError(f"`{tool}` not found on PATH")
    openssl = shutil.which("openssl")
    sha256sum = shutil.which("sha256sum")

    meta = {
        "date_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(),
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "nproc": nproc,
        "mem_total_kib": _meminfo_total_kib(),
        "python": sys.version.split()[0],
        "python_executable": sys.executable,
        "git_rev": _git_rev(),
        "modelseal": {
            "path": ms,
            "found": ms_how,
            "version": first_line([ms, "--version"]) if ms else None,
        },
        "model_signing": {"path": up, "found": up_how, "version": first_line([up, "--version"])},
        "openssl": first_line([openssl, "version"]),
        "sha256sum": first_line([sha256sum, "--version"]),
        "rounds": args.rounds,
        "loadavg_start": _loadavg(),
    }
    print("modelseal benchmark")
    for k in ("date_utc", "cpu", "nproc", "python", "git_rev"):
        print(f"  {k:14s} {meta[k]}")
    print(f"  {'modelseal':14s} {ms or 'NOT FOUND (peers only)'}  [{meta['modelseal']['version']}]")
    print(f"  {'model_signing':14s} {up}  [{meta['model_signing']['version']}]")
    print(f"  {'openssl':14s} {meta['openssl']}")
    print(f"  {'sha256sum':14s} {meta['sha256sum']}")

    work = os.path.join(data_dir, "work")  # keys + seals, outside the model dirs
    if os.path.isdir(work):
        shutil.rmtree(work)
    os.makedirs(work)
    results: dict = {
        "meta": meta,
        "config": {"data_dir": data_dir, "shard_sizes_tried": shard_sizes},
    }

    if args.wait_idle > 0:
        wait_for_idle(args.wait_idle)

    # ---- page cache
    dt = warm_page_cache([*multi_files, single])
    print(f"\nwarm-up read of {(multi_bytes + single_bytes) / MIB:.0f} MiB (page cache): {dt:.2f}s")

    # ---- keys
    up_key, up_pub = os.path.join(work, "upstream.key"), os.path.join(work, "upstream.pub")
    run(
        [
            openssl,
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            up_key,
        ]
    )
    run([openssl, "pkey", "-in", up_key, "-pubout", "-out", up_pub])
    ms_key = ms_pub = None
    if ms:
        base = os.path.join(work, "modelseal")
        r = run(
            [ms, "keygen", "--out", base, "--algorithm", "ecdsa-p256"], capture=True, check=False
        )
        ms_key, ms_pub = base + ".key", base + ".pub"
        if r.rc != 0 or not (os.path.isfile(ms_key) and os.path.isfile(ms_pub)):
            print(
                f"  warning: `modelseal keygen` failed (exit {r.rc}); "
                "using an openssl P-256 PKCS#8 key instead"
            )
            run(
                [
                    openssl,
                    "genpkey",
                    "-algorithm",
                    "EC",
                    "-pkeyopt",
                    "ec_paramgen_curve:P-256",
                    "-out",
                    ms_key,
                ]
            )
            run([openssl, "pkey", "-in", ms_key, "-pubout", "-out", ms_pub])
            results["config"]["modelseal_key"] = "openssl (keygen failed)"
        else:
            results["config"]["modelseal_key"] = "modelseal keygen"

    # ---- seals (untimed for the comparison; one sample each kept as info)
    print("\nsealing (untimed for the targets)")
    signs: dict = {}
    up_multi_sig = os.path.join(work, "upstream-multi.sig")
    up_single_sig = os.path.join(work, "upstream-single.sig")
    signs["upstream multi"] = run(
        [up, "sign", "key", multi_dir, "--private_key", up_key, "--signature", up_multi_sig]
    ).wall
    signs["upstream single"] = run(
        [up, "sign", "key", single, "--private_key", up_key, "--signature", up_single_sig]
    ).wall
    ms_multi_sig = os.path.join(work, "modelseal-multi.sig")
    if ms:
        signs["modelseal multi"] = run(
            [ms, "seal", multi_dir, "--key", ms_key, "--signature", ms_multi_sig]
        ).wall
    for k, v in signs.items():
        print(f"  {k:18s} {v:.3f}s")
    results["sign_once_s"] = signs

    def ms_verify(model, sig):
        return [ms, "verify", model, "--public-key", ms_pub, "--signature", sig]

    def up_verify(model, sig):
        return [up, "verify", "key", model, "--signature", sig, "--public_key", up_pub]

    # ---- sanity: a wrong key must fail
    if ms:
        run(
            [ms, "verify", multi_dir, "--public-key", up_pub, "--signature", ms_multi_sig],
            expect_fail=True,
        )
        print("  sanity: modelseal verify with the wrong public key fails, as it must")

    noise: dict = {}
    results["background_cpu"] = noise

    # ---- 1. multi-file directory
    meter = CpuMeter()
    print(
        f"\n[1] multi-file dir: {len(multi_files)} x "
        f"{layout['multi_files'][0][1] / MIB:.0f} MiB, {args.rounds} rounds"
    )
    cmds = {}
    if ms:
        cmds["modelseal verify"] = ms_verify(multi_dir, ms_multi_sig)
    cmds["model_signing verify"] = up_verify(multi_dir, up_multi_sig)
    cmds["openssl dgst -sha256"] = [openssl, "dgst", "-sha256", *multi_files]
    if not args.no_sha256sum:
        cmds["sha256sum"] = [sha256sum, *multi_files]
        # all cores, naively: one sha256sum per file, nproc at a time (names via a list file)
        listfile = os.path.join(work, "multi-files.lst")
        with open(listfile, "wb") as f:
            f.write(b"\0".join(p.encode() for p in multi_files))
        cmds[f"sha256sum xargs -P{nproc}"] = [
            "sh",
            "-c",
            'exec xargs -0 -P "$2" -n 1 "$0" < "$1"',
            sha256sum,
            listfile,
            str(nproc),
        ]
    multi_runs = alternate(cmds, args.rounds, "multi")
    multi = {n: summarize(rs, multi_bytes) for n, rs in multi_runs.items()}
    multi_ratios = (
        ratios(multi_runs["modelseal verify"], multi_runs["model_signing verify"]) if ms else {}
    )
    results["multi_dir"] = {
        "bytes": multi_bytes,
        "files": len(multi_files),
        "tools": multi,
        **multi_ratios,
    }
    report_noise("multi_dir", meter, noise)

    # ---- 2. single 2 GiB file
    meter = CpuMeter()
    print(f"\n[2] single file: {single_bytes / MIB:.0f} MiB, {args.rounds} rounds")
    chosen = None
    trials = {}
    if ms:
        cands = [(f"--shard-size {sz // MIB} MiB", sz) for sz in shard_sizes]
        cands.append(("default (no --shard-size)", None))
        trial_cmds = {}
        for label, sz in cands:
            sig = os.path.join(work, f"modelseal-single-{sz // MIB if sz else 'default'}.sig")
            cmd = [ms, "seal", single, "--key", ms_key, "--signature", sig]
            if sz:
                cmd += ["--shard-size", str(sz)]
            trials[label] = {"shard_size": sz, "seal_s": run(cmd).wall, "signature": sig}
            trial_cmds[label] = ms_verify(single, sig)
        trial_runs = alternate(trial_cmds, args.trial_rounds, "shard trial")
        for label, rs in trial_runs.items():
            trials[label]["verify_median_s"] = statistics.median(r.wall for r in rs)
            trials[label]["verify_samples_s"] = [round(r.wall, 4) for r in rs]
            print(
                f"  trial {label:26s} seal {trials[label]['seal_s']:.3f}s  "
                f"verify median {trials[label]['verify_median_s']:.3f}s"
            )
        shard_trials = {k: v for k, v in trials.items() if v["shard_size"]}
        best = min(shard_trials, key=lambda k: shard_trials[k]["verify_median_s"])
        chosen = shard_trials[best]
        print(f"  chosen: {best}")
    cmds = {}
    if ms:
        cmds["modelseal verify (shards)"] = ms_verify(single, chosen["signature"])
    cmds["model_signing verify (default)"] = up_verify(single, up_single_sig)
    single_runs = alternate(cmds, args.rounds, "single")
    single_res = {n: summarize(rs, single_bytes) for n, rs in single_runs.items()}
    single_ratios = (
        ratios(
            single_runs["modelseal verify (shards)"], single_runs["model_signing verify (default)"]
        )
        if ms
        else {}
    )
    results["single_file"] = {
        "bytes": single_bytes,
        "shard_trials": trials,
        "chosen_shard_size": chosen["shard_size"] if chosen else None,
        "tools": single_res,
        **single_ratios,
    }
    report_noise("single_file", meter, noise)

    # ---- 3. hashing throughput
    meter = CpuMeter()
    print(
        f"\n[3] hashing throughput: `modelseal hash` on the multi-file dir "
        f"vs openssl speed -multi {nproc}"
    )
    speed_base = [openssl, "speed", "-multi", str(nproc)]
    speed_runs: list[dict] = []

    def openssl_speed(cmd):
        r = run(cmd, capture=True)
        sp = parse_openssl_speed((r.stdout or "") + "\n" + (r.stderr or ""))
        speed_runs.append(sp)
        return sp

    hash_res = None
    if args.openssl_speed_full or not ms:
        speed_cmd = [*speed_base, "-evp", "sha256"]
        openssl_speed(speed_cmd)
    else:
        # Same measurement as the 16384-byte column of the full table (same
        # block size, same 3 s per child), without the 15 s of other sizes,
        # so it can be interleaved with `modelseal hash` every round.
        speed_cmd = [*speed_base, "-seconds", "3", "-bytes", "16384", "-evp", "sha256"]
    if ms:
        hash_cmd = [ms, "hash", multi_dir]
        run(hash_cmd)  # warm-up
        hash_runs = []
        paired = []
        for r_ in range(args.rounds):
            pair = [("hash", hash_cmd), ("speed", speed_cmd)]
            if r_ % 2:
                pair.reverse()
            msg = []
            for kind, cmd in pair:
                if kind == "hash":
                    hash_runs.append(run(cmd))
                    msg.append(f"modelseal hash={multi_bytes / hash_runs[-1].wall / 1e6:.0f} MB/s")
                elif not args.openssl_speed_full:
                    msg.append(f"openssl speed={openssl_speed(cmd)['bytes_per_s'] / 1e6:.0f} MB/s")
            paired.append(multi_bytes / hash_runs[-1].wall / speed_runs[-1]["bytes_per_s"])
            print(f"  [throughput] round {r_ + 1}/{args.rounds}: {'  '.join(msg)}", flush=True)
        hash_res = summarize(hash_runs, multi_bytes)
    rates = [sp["bytes_per_s"] for sp in speed_runs]
    speed = {
        "command": _cmd_str(speed_cmd),
        "block_bytes": 16384,
        "bytes_per_s": statistics.median(rates),
        "samples_bytes_per_s": rates,
        "runs": speed_runs,
    }
    tp_ratio = tp_ratio_best = tp_paired = None
    if hash_res:
        tp_ratio = hash_res["mb_per_s_median"] * 1e6 / speed["bytes_per_s"]
        tp_ratio_best = hash_res["mb_per_s_best"] * 1e6 / max(rates)
        tp_paired = statistics.median(paired)
    print(
        f"  openssl speed (median of {len(rates)}): "
        f"{speed['bytes_per_s'] / 1e6:.1f} MB/s at 16384-byte blocks"
    )
    results["throughput"] = {
        "openssl_speed": speed,
        "modelseal_hash": hash_res,
        "ratio_median": tp_ratio,
        "ratio_best": tp_ratio_best,
        "ratio_paired_median": tp_paired,
    }
    report_noise("throughput", meter, noise)

    # ---- 4. startup
    meter = CpuMeter()
    print(f"\n[4] --version wall time, {args.version_runs} runs")
    cmds = {}
    if ms:
        cmds["modelseal --version"] = [ms, "--version"]
    cmds["model_signing --version"] = [up, "--version"]
    ver_runs = alternate(cmds, args.version_runs, "version") if args.version_runs > 0 else {}
    ver = {n: summarize(rs) for n, rs in ver_runs.items()}
    results["startup"] = ver
    report_noise("startup", meter, noise)

    # ---- 5. peak RSS
    print(f"\n[5] peak RSS verifying the 2 GiB file ({args.rss_runs} untimed runs each, max)")
    rss = {}
    rss_cmds = {}
    if ms:
        rss_cmds["modelseal verify (shards)"] = ms_verify(single, chosen["signature"])
    rss_cmds["model_signing verify (default)"] = up_verify(single, up_single_sig)
    for n, cmd in rss_cmds.items():
        samples = [measure_rss(cmd) for _ in range(max(1, args.rss_runs))]
        rss[n] = {
            "max_rss_kib": max(x["max_rss_kib"] for x in samples),
            "tree_peak_rss_kib_sampled": max(x["tree_peak_rss_kib_sampled"] for x in samples),
            "samples_kib": [x["max_rss_kib"] for x in samples],
            "method": samples[0]["method"],
        }
        print(
            f"  {n:32s} max RSS {fmt_mib(rss[n]['max_rss_kib'])} MiB   "
            f"process-tree sampled {fmt_mib(rss[n]['tree_peak_rss_kib_sampled'])} MiB   "
            f"[{rss[n]['method']}]"
        )
    results["rss"] = rss

    # ---- targets
    ms_rss = rss.get("modelseal verify (shards)", {}).get("max_rss_kib")
    ms_ver = ver.get("modelseal --version", {}).get("median_s")
    targets = [
        (
            "multi-file verify: modelseal/upstream (median)",
            multi_ratios.get("ratio_median"),
            "<=",
            TARGET_MULTI_RATIO,
        ),
        (
            "2 GiB verify: modelseal shards/upstream default (median)",
            single_ratios.get("ratio_median"),
            "<=",
            TARGET_SINGLE_RATIO,
        ),
        (
            "hash throughput: modelseal/openssl speed (median)",
            tp_ratio,
            ">=",
            TARGET_THROUGHPUT_RATIO,
        ),
        ("modelseal --version wall s (median)", ms_ver, "<=", TARGET_VERSION_S),
        (
            "modelseal verify 2 GiB peak RSS MiB",
            None if ms_rss is None else ms_rss / 1024,
            "<=",
            TARGET_RSS_KIB / 1024,
        ),
    ]
    tlist = []
    for name, val, op, tgt in targets:
        ok = None if val is None else (val <= tgt if op == "<=" else val >= tgt)
        tlist.append(
            {
                "name": name,
                "value": val,
                "op": op,
                "target": tgt,
                "status": "n/a" if ok is None else ("PASS" if ok else "FAIL"),
            }
        )
    results["targets"] = tlist
    results["elapsed_s"] = time.perf_counter() - t_start

    print_report(results, nproc)
    os.makedirs(os.path.dirname(json_path), exist_ok=True)
    with open(json_path, "w") as f:
        json.dump(results, f, indent=2, sort_keys=False)
        f.write("\n")
    print(f"\nJSON: {json_path}   (total bench time {results['elapsed_s']:.0f}s)")
    if args.strict and any(t["status"] != "PASS" for t in tlist):
        return 1
    return 0


def print_report(res: dict, nproc: int) -> None:
    print("\n" + "=" * 96)
    print("RESULTS (wall seconds; MB/s = 10^6 bytes/s over the median time; cpu = user+sys median)")
    print("=" * 96)

    def table(title, rows):
        print(f"\n{title}")
        print(f"  {'tool':34s} {'median s':>9s} {'min s':>9s} {'cpu s':>8s} {'MB/s':>9s}")
        for n, d in rows.items():
            mbs = f"{d['mb_per_s_median']:.0f}" if "mb_per_s_median" in d else "-"
            print(
                f"  {n:34s} {fmt_s(d['median_s']):>9s} {fmt_s(d['min_s']):>9s} "
                f"{d['cpu_median_s']:8.2f} {mbs:>9s}"
            )

    def ratio_line(d, what="modelseal/upstream"):
        if d.get("ratio_median") is not None:
            print(
                f"  ratio {what}: of medians {fmt_ratio(d['ratio_median'])}  "
                f"of mins {fmt_ratio(d.get('ratio_min'))}  "
                f"per-round median {fmt_ratio(d.get('ratio_paired_median'))}"
            )

    m = res["multi_dir"]
    table(f"multi-file dir ({m['files']} files, {m['bytes'] / MIB:.0f} MiB)", m["tools"])
    ratio_line(m)
    s = res["single_file"]
    cs = s["chosen_shard_size"]
    table(
        f"single file ({s['bytes'] / MIB:.0f} MiB; modelseal shard size "
        f"{'-' if cs is None else f'{cs // MIB} MiB'})",
        s["tools"],
    )
    ratio_line(s)
    t = res["throughput"]
    print(
        f"\nhashing throughput ({t['openssl_speed']['block_bytes']}-byte column of "
        f"openssl speed, -multi {nproc})"
    )
    print(f"  {t['openssl_speed']['command']}")
    print(
        f"  openssl speed (median)             : "
        f"{t['openssl_speed']['bytes_per_s'] / 1e6:9.1f} MB/s"
    )
    if t["modelseal_hash"]:
        h = t["modelseal_hash"]
        print(
            f"  modelseal hash (median {h['median_s']:.3f}s)   : {h['mb_per_s_median']:9.1f} MB/s"
            f"  (best {h['mb_per_s_best']:.1f})"
        )
        print(
            f"  ratio modelseal/openssl: of medians {fmt_ratio(t['ratio_median'])}  "
            f"best/best {fmt_ratio(t['ratio_best'])}  "
            f"per-round median {fmt_ratio(t['ratio_paired_median'])}"
        )
    if res["startup"]:
        table("--version", res["startup"])
    print("\npeak RSS verifying the 2 GiB file")
    for n, d in res["rss"].items():
        print(
            f"  {n:34s} {fmt_mib(d['max_rss_kib']):>8s} MiB (max RSS)   "
            f"{fmt_mib(d['tree_peak_rss_kib_sampled']):>8s} MiB (process tree, sampled)"
        )

    busy = {k: v for k, v in res["background_cpu"].items() if v["foreign_pct_of_capacity"] > 5}
    if busy:
        print("\nWARNING: other processes used CPU during the run (% of capacity): ", end="")
        print(", ".join(f"{k} {v['foreign_pct_of_capacity']:.0f}%" for k, v in busy.items()))
        print("         figures are unreliable; re-run on an idle machine")

    print("\nTARGETS (ratios: of the medians)")
    for tg in res["targets"]:
        v = "-" if tg["value"] is None else f"{tg['value']:.3f}"
        print(f"  {tg['status']:5s} {tg['name']:58s} {v:>9s} {tg['op']} {tg['target']}")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def _loadavg():
    try:
        with open("/proc/loadavg") as f:
            return [float(x) for x in f.read().split()[:3]]
    except (OSError, ValueError):
        return None


def _meminfo_total_kib():
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _git_rev():
    try:
        r = subprocess.run(
            ["git", "-C", REPO_DIR, "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        return r.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


if __name__ == "__main__":
    sys.exit(main())
