#!/usr/bin/env python3
"""Trusted download: `modelseal fetch` / `lock sync` / `lock verify` against curl, wget, sha256sum.

    .venv/bin/python bench/fetch.py [--size-mib 1024] [--zip-mib 256] [--rounds 5]
                                    [--server auto|nginx|openssl|python]

Serves, over HTTPS on 127.0.0.1, a file of --size-mib of random bytes and a zip (stored, not
deflated) of 4 files of --zip-mib in all, from a private CA made with trustme (modelseal trusts
it through SSL_CERT_FILE, curl through --cacert, wget through --ca-certificate). The server is
not modelseal's test server: `auto` times curl downloads of the big file from each server found
(nginx, `openssl s_server -WWW`, a threaded Python server) and keeps the first in that order
within 10% of the fastest.

Groups, each timed in alternating rounds (bench/run.py's harness; outputs deleted and the disk
synced, untimed, before every run, so each run starts from the same state):

  file     modelseal fetch --sha256  vs  curl + sha256sum -c  vs  wget + sha256sum -c
           vs  curl + openssl dgst  vs  curl alone (pure transfer: the floor)
           and modelseal lock sync with an empty cache (download into the cache)
  zip      modelseal fetch (download, check, safe extract, seal)
           vs  curl + sha256sum -c + unzip -q (+ rm of the archive, as modelseal removes it)
  verify   modelseal lock verify (the big file cached)  vs  sha256sum -c  vs  openssl dgst

A non-zero exit of any command aborts the run. Prints a JSON dump and a Markdown table.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
import zipfile

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_DIR = os.path.dirname(BENCH_DIR)
sys.path.insert(0, BENCH_DIR)
from run import (  # noqa: E402
    BenchError,
    CpuMeter,
    Result,
    report_noise,
    run,
    wait_for_idle,
    warm_page_cache,
)
from trust import write_random  # noqa: E402

MIB = 1024 * 1024


def sha256_file(path: str) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --------------------------------------------------------------------------
# servers

NGINX_CONF = """\
worker_processes 1;
user root;
daemon off;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    ssl_buffer_size 16k;
    client_body_temp_path {work}/nginx-body;
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        root {root};
    }}
}}
"""

PY_SERVER = """\
import functools, http.server, ssl, sys
root, port, cert, key = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=root)
server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
server.socket = ctx.wrap_socket(server.socket, server_side=True)
server.serve_forever()
"""


class Server:
    """One HTTPS server process on 127.0.0.1, started and stopped by this harness (by pid)."""

    def __init__(self, kind: str, work: str, root: str, cert: str, key: str, ca: str) -> None:
        self.kind, self.port, self.ca = kind, free_port(), ca
        self.log = open(os.path.join(work, f"server-{kind}.log"), "wb")  # noqa: SIM115
        if kind == "nginx":
            conf = os.path.join(work, "nginx.conf")
            with open(conf, "w") as handle:
                handle.write(
                    NGINX_CONF.format(work=work, port=self.port, cert=cert, key=key, root=root)
                )
            argv = ["nginx", "-p", work, "-e", os.path.join(work, "nginx-error.log"), "-c", conf]
            cwd = work
            self.version = subprocess.run(
                ["nginx", "-v"], capture_output=True, text=True, check=True
            ).stderr.strip()
        elif kind == "openssl":
            argv = ["openssl", "s_server", "-WWW", "-quiet", "-accept", f"127.0.0.1:{self.port}",
                    "-cert", cert, "-key", key]  # fmt: skip
            cwd = root
            self.version = subprocess.run(
                ["openssl", "version"], capture_output=True, text=True, check=True
            ).stdout.strip()
        elif kind == "python":
            argv = [sys.executable, "-c", PY_SERVER, root, str(self.port), cert, key]
            cwd = work
            self.version = f"Python {sys.version.split()[0]} http.server (threaded)"
        else:
            raise BenchError(f"unknown server {kind!r}")
        self.proc = subprocess.Popen(
            argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log
        )
        self._wait_ready()

    def url(self, name: str) -> str:
        return f"https://127.0.0.1:{self.port}/{name}"

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 15
        while True:
            if self.proc.poll() is not None:
                raise BenchError(f"{self.kind} server exited with {self.proc.returncode}")
            probe = ["curl", "-sS", "--cacert", self.ca, "-o", "/dev/null", self.url("ping")]
            if run(probe, check=False).rc == 0:
                return
            if time.monotonic() > deadline:
                raise BenchError(f"{self.kind} server did not answer on port {self.port}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def available_servers() -> list[str]:
    found = ["nginx"] if shutil.which("nginx") else []
    if shutil.which("openssl"):
        found.append("openssl")
    return [*found, "python"]


# --------------------------------------------------------------------------
# timing


def alternate_clean(
    commands: dict[str, list[str]], cleanup: list[str], rounds: int, label: str
) -> dict[str, list[Result]]:
    """bench/run.py's alternate(), plus an untimed cleanup before every run: the paths in
    `cleanup` are removed and the disk synced, so no run pays for the previous run's output."""

    def clean() -> None:
        for path in cleanup:
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            elif os.path.lexists(path):
                os.unlink(path)
        os.sync()

    names = list(commands)
    for n in names:  # warm-up + exit code check
        clean()
        run(commands[n])
    out: dict[str, list[Result]] = {n: [] for n in names}
    for r in range(rounds):
        k = r % len(names)
        for n in names[k:] + names[:k]:
            clean()
            out[n].append(run(commands[n]))
        line = "  ".join(f"{n}={out[n][-1].wall:.3f}s" for n in names)
        print(f"  [{label}] round {r + 1}/{rounds}: {line}", flush=True)
    clean()
    return out


def medians(results: dict[str, list[Result]]) -> dict[str, dict]:
    table = {}
    for name, runs in results.items():
        walls = [r.wall for r in runs]
        table[name] = {
            "median_s": round(statistics.median(walls), 4),
            "min_s": round(min(walls), 4),
            "cpu_median_s": round(statistics.median(r.user + r.sys for r in runs), 3),
            "samples_s": [round(w, 4) for w in walls],
        }
    return table


def add_ratios(table: dict[str, dict], results: dict, mine: str, peers: list[str]) -> None:
    """Ratio of medians and median of per-round ratios (paired: same round, back to back)."""
    for peer in peers:
        a = [r.wall for r in results[mine]]
        b = [r.wall for r in results[peer]]
        table[mine][f"/ {peer}"] = {
            "ratio_median": round(statistics.median(a) / statistics.median(b), 3),
            "ratio_paired_median": round(
                statistics.median(x / y for x, y in zip(a, b, strict=True)), 3
            ),
        }


def sh(script: str) -> list[str]:
    return ["sh", "-ec", script]


# --------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--zip-mib", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--server", choices=["auto", "nginx", "openssl", "python"], default="auto")
    ap.add_argument("--no-wait", action="store_true", help="do not wait for an idle machine")
    args = ap.parse_args()
    import trustme

    ms = os.path.join(os.path.dirname(sys.executable), "modelseal")
    work = os.path.join(BENCH_DIR, ".data", "fetch")
    shutil.rmtree(work, ignore_errors=True)
    root, out = os.path.join(work, "srv"), os.path.join(work, "out")
    os.makedirs(root)
    os.makedirs(out)

    # data: one big file, one stored zip of 4 files
    big = os.path.join(root, "model.bin")
    write_random(big, args.size_mib * MIB, 1)
    zip_path = os.path.join(root, "bundle.zip")
    part = args.zip_mib * MIB // 4
    with zipfile.ZipFile(zip_path, "w", compression=zipfile.ZIP_STORED) as zf:
        for i in range(4):
            member = os.path.join(work, f"w{i}.bin")
            write_random(member, part, 10 + i)
            zf.write(member, f"weights/w{i}.bin")
            os.unlink(member)
    big_hex, zip_hex = sha256_file(big), sha256_file(zip_path)
    with open(os.path.join(root, "ping"), "w") as handle:
        handle.write("ok\n")

    # certificates: a private CA and a server certificate for 127.0.0.1
    ca = trustme.CA()
    server_cert = ca.issue_cert("127.0.0.1", "localhost")
    ca_pem, cert_pem, key_pem = (os.path.join(work, n) for n in ("ca.pem", "cert.pem", "key.pem"))
    ca.cert_pem.write_to_path(ca_pem)
    server_cert.cert_chain_pems[0].write_to_path(cert_pem)
    for extra in server_cert.cert_chain_pems[1:]:
        extra.write_to_path(cert_pem, append=True)
    server_cert.private_key_pem.write_to_path(key_pem)
    os.environ["SSL_CERT_FILE"] = ca_pem  # modelseal trusts the CA the standard way

    results: dict = {
        "git": subprocess.run(
            ["git", "-C", REPO_DIR, "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
        ).stdout.strip(),
        "size_mib": args.size_mib,
        "zip_mib": args.zip_mib,
        "rounds": args.rounds,
        "cpus": os.cpu_count(),
    }
    noise: dict[str, dict] = {}
    if not args.no_wait:
        wait_for_idle(120)
    warm_page_cache([big, zip_path])

    # pick the server: the fastest curl download of the big file
    kinds = available_servers() if args.server == "auto" else [args.server]
    probe: dict[str, float] = {}
    if len(kinds) > 1:
        print(f"\nserver probe (curl -o /dev/null, {args.size_mib} MiB, best of 2)")
        for kind in kinds:
            srv = Server(kind, work, root, cert_pem, key_pem, ca_pem)
            try:
                cmd = ["curl", "-sS", "--cacert", ca_pem, "-o", "/dev/null", srv.url("model.bin")]
                probe[kind] = min(run(cmd).wall for _ in range(2))
            finally:
                srv.stop()
            rate = args.size_mib * MIB / probe[kind] / 1e6
            print(f"  {kind:8s} {probe[kind]:.3f}s  {rate:.0f} MB/s")
        # The client is usually the bottleneck, so the servers come out within noise of each
        # other: among those within 10% of the fastest, prefer a production server.
        best = min(probe.values())
        kinds = [next(k for k in probe if probe[k] <= best * 1.10)]
    server = Server(kinds[0], work, root, cert_pem, key_pem, ca_pem)
    results["server"] = {"kind": server.kind, "version": server.version, "probe_s": probe}
    print(f"\nserver: {server.kind} ({server.version}) on port {server.port}")
    try:
        url, zip_url = server.url("model.bin"), server.url("bundle.zip")
        x = os.path.join(out, "model.bin")
        check_big = f"echo '{big_hex}  {x}' | sha256sum -c --status -"
        curl = f"curl -sS --cacert '{ca_pem}' -o '{x}' '{url}'"
        lock = os.path.join(work, "models.lock")
        cache_sync, cache_verify = os.path.join(work, "cache-sync"), os.path.join(work, "cache")
        run([ms, "lock", "add", url, "--sha256", big_hex, "--name", "model", "--lock", lock,
             "--cache", cache_verify, "-q"])  # fmt: skip

        # ---- 1. one big file
        meter = CpuMeter()
        print(f"\n[file] {args.size_mib} MiB, {args.rounds} rounds")
        commands = {
            "modelseal fetch": [ms, "fetch", url, "--sha256", big_hex, "--out", x, "-q"],
            "modelseal lock sync": [
                ms,
                "lock",
                "sync",
                "--lock",
                lock,
                "--cache",
                cache_sync,
                "-q",
            ],
            "curl+sha256sum": sh(f"{curl} && {check_big}"),
            "wget+sha256sum": sh(
                f"wget -q --ca-certificate='{ca_pem}' -O '{x}' '{url}' && {check_big}"
            ),
            "curl+openssl dgst": sh(
                f"{curl} && openssl dgst -sha256 -r '{x}' | grep -q '^{big_hex} '"
            ),
            "curl alone": sh(curl),
        }
        runs = alternate_clean(commands, [x, cache_sync], args.rounds, "file")
        report_noise("file", meter, noise)
        table = medians(runs)
        peers = ["curl+sha256sum", "wget+sha256sum", "curl+openssl dgst", "curl alone"]
        add_ratios(table, runs, "modelseal fetch", peers)
        add_ratios(table, runs, "modelseal lock sync", peers)
        results["file"] = table

        # ---- 2. zip: download, check, extract (modelseal also seals)
        meter = CpuMeter()
        print(f"\n[zip] {args.zip_mib} MiB, 4 stored members, {args.rounds} rounds")
        zdir, zfile = os.path.join(out, "bundle"), os.path.join(out, "bundle.zip")
        commands = {
            "modelseal fetch": [ms, "fetch", zip_url, "--sha256", zip_hex, "--out", zdir, "-q"],
            "curl+sha256sum+unzip": sh(
                f"curl -sS --cacert '{ca_pem}' -o '{zfile}' '{zip_url}'"
                f" && echo '{zip_hex}  {zfile}' | sha256sum -c --status -"
                f" && unzip -q '{zfile}' -d '{zdir}' && rm '{zfile}'"
            ),
            "curl alone": sh(f"curl -sS --cacert '{ca_pem}' -o '{zfile}' '{zip_url}'"),
        }
        runs = alternate_clean(commands, [zdir, zfile], args.rounds, "zip")
        report_noise("zip", meter, noise)
        table = medians(runs)
        add_ratios(table, runs, "modelseal fetch", ["curl+sha256sum+unzip", "curl alone"])
        results["zip"] = table

        # ---- 3. offline check of the cached big file
        meter = CpuMeter()
        cached = os.path.join(cache_verify, "sha256", big_hex[:2], big_hex)
        if not os.path.isfile(cached):
            raise BenchError(f"lock add did not cache {cached}")
        warm_page_cache([cached])
        sums = os.path.join(work, "SHA256SUMS")
        with open(sums, "w") as handle:
            handle.write(f"{big_hex}  {cached}\n")
        print(f"\n[verify] cached {args.size_mib} MiB, {args.rounds} rounds")
        commands = {
            "modelseal lock verify": [
                ms,
                "lock",
                "verify",
                "--lock",
                lock,
                "--cache",
                cache_verify,
                "-q",
            ],
            "sha256sum -c": ["sha256sum", "-c", "--status", sums],
            "openssl dgst": sh(f"openssl dgst -sha256 -r '{cached}' | grep -q '^{big_hex} '"),
        }
        runs = alternate_clean(commands, [], args.rounds, "verify")
        report_noise("verify", meter, noise)
        table = medians(runs)
        add_ratios(table, runs, "modelseal lock verify", ["sha256sum -c", "openssl dgst"])
        results["verify"] = table
    finally:
        server.stop()
    results["background_cpu"] = noise

    print("\n| group | command | median s | MB/s | ratios (of medians; paired in brackets) |")
    print("|---|---|---|---|---|")
    for group, size in (("file", args.size_mib), ("zip", args.zip_mib), ("verify", args.size_mib)):
        for name, d in results[group].items():
            rs = ", ".join(
                f"{k[2:]} {v['ratio_median']:.2f} ({v['ratio_paired_median']:.2f})"
                for k, v in d.items()
                if k.startswith("/ ")
            )
            mbs = size * MIB / d["median_s"] / 1e6
            print(f"| {group} | `{name}` | {d['median_s']:.3f} | {mbs:.0f} | {rs or '-'} |")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        print(f"fetch bench: {exc}", file=sys.stderr)
        sys.exit(2)
