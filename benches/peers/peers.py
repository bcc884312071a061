"""The peer load benchmark: nginx, HAProxy, sluicegate and the floor binary
side by side, in alternating rounds, on this machine.

Run through run.sh (which installs the tools and builds the binaries):
    bash benches/peers/run.sh            # full: 5 rounds of 10 s per case
    bash benches/peers/run.sh --quick    # 1 round of 3 s, for a smoke test

Layout: each proxy pinned to core 0; wrk/h2load and the two nginx origins
pinned to core 1. Per proxy and case: requests/s, p50/p99/p99.9 latency, user /
system / total CPU µs per request (utime/stime deltas from /proc/PID/stat,
summed over the proxy's processes), peak RSS (VmHWM). Once per proxy, outside
the rounds: system calls per request (perf's raw_syscalls tracepoint at full
speed, and `strace -c -f` for the breakdown), RSS per idle keep-alive client
connection with 10,000 of them, and a perf cpu-clock profile (sluicegate and
floor). Results: target/peers/results.json and results.md (the *-quick files
for --quick).

TLS cases (tls_ka, tls_handshake, tls_resume; nginx, HAProxy and sluicegate
only: the floor has no TLS, so a case's `proxies` leaves it out). At the start
of a run with any of them, one self-signed ECDSA P-256 certificate for
target.bench.example (SAN DNS:target.bench.example, IP:127.0.0.1) is made with
`openssl req -x509` in the work dir, and every proxy gets a third listener on
`tls_port` with it: TLS 1.3 only (nginx ssl_protocols TLSv1.3, HAProxy
ssl-min-ver TLSv1.3), default ciphers and groups, HTTP/1.1 (nginx without
http2, HAProxy alpn http/1.1), the plain listener's forwarding headers with
X-Forwarded-Proto https, and the usual resumption setup (nginx
ssl_session_cache shared:SSL:10m + ssl_session_tickets on, HAProxy's default
cache and tickets). sluicegate's listener is `tls = { cert, key }` with rustls
defaults: it also accepts TLS 1.2 and offers ALPN h2 (no switches for either),
but wrk offers no ALPN and negotiates TLS 1.3, so every proxy sees TLS 1.3 +
HTTP/1.1.

Session resumption: wrk (4.1.0) keeps one SSL object per connection slot and
on reconnect calls SSL_shutdown + SSL_clear, which keeps the last session and
its TLS 1.3 ticket; the next handshake offers it and all three servers resume
(checked with nginx logging $ssl_session_reused: with Connection: close, all
but the first handshake per slot were resumed). So wrk runs with an
LD_PRELOAD shim (wrk_tls_shim.c, compiled with cc at the start of the run)
that, per case, either drops the session after SSL_clear (full handshakes) or
leaves wrk alone (resumed), and counts the completed handshakes of each kind
(SSL_session_reused); the log line and the "resumed %" column report them.
  tls_ka         keep-alive, 64 connections: 64 full handshakes, then requests
  tls_handshake  Connection: close, 64 at a time, full handshakes only (what a
                 new client costs; the servers still issue their tickets):
                 req/s = handshakes/s, µs/req = CPU per handshake
  tls_resume     the same with wrk's own behaviour: resumed handshakes (TLS 1.3
                 PSK with (EC)DHE, so it saves the certificate signature, not
                 the key exchange)
In the handshake cases the load core (wrk doing the client half of every
handshake, plus the origins) can be the limit before the proxy is: read
CPU per handshake first, and req/s with the core0 / proxy CPU % columns.
Each TLS case adds about 5 rounds × (10 s + 1 s warm-up) per proxy to a
full run.
"""

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402
from harness import HERE, LOAD_CPU, OUT, PROXY_CPU, TARGET_HOST  # noqa: E402

TLS_PROXIES = ("nginx", "haproxy", "sluicegate")  # kinds with a TLS listener

CASES = {
    "ka_small": dict(tool="wrk", path="/", conns=64,
                     title="HTTP/1.1 keep-alive, 64 connections, small body"),
    "ka_64k": dict(tool="wrk", path="/64k", conns=64,
                   title="HTTP/1.1 keep-alive, 64 connections, 64 KiB body"),
    "h2c": dict(tool="h2load", path="/", clients=8, streams=8,
                title="h2c (prior knowledge), 8 connections x 8 streams, small body"),
    "conn_close": dict(tool="wrk", path="/", conns=64, headers=["Connection: close"],
                       title="connection per request (Connection: close), 64 at a time"),
    "paced": dict(tool="wrk", path="/", conns=64, delay_ms=10,
                  title="fixed offered load: 64 keep-alive connections, 10 ms pause "
                        "after each response (same load for every proxy)"),
    # TLS cases: HTTPS (HTTP/1.1 over TLS 1.3) on the proxy's tls_port; the
    # floor has no TLS. `resume` picks what wrk does on reconnect (see
    # wrk_tls_shim.c): False = a full handshake every time, True = resumed.
    "tls_ka": dict(tool="wrk", path="/", conns=64, tls=True, resume=False,
                   proxies=TLS_PROXIES,
                   title="TLS 1.3 keep-alive (HTTP/1.1), 64 connections, small body"),
    "tls_handshake": dict(tool="wrk", path="/", conns=64, tls=True, resume=False,
                          headers=["Connection: close"], proxies=TLS_PROXIES,
                          per_handshake=True,
                          title="TLS 1.3 connection per request, full handshakes "
                                "(no resumption), 64 at a time"),
    "tls_resume": dict(tool="wrk", path="/", conns=64, tls=True, resume=True,
                       headers=["Connection: close"], proxies=TLS_PROXIES,
                       per_handshake=True,
                       title="TLS 1.3 connection per request, resumed handshakes "
                             "(wrk offers its last session), 64 at a time"),
}

PROXIES = {
    "nginx": dict(kind="nginx"),
    "haproxy": dict(kind="haproxy"),
    "sluicegate": dict(kind="sluicegate"),
    "floor": dict(kind="floor"),
    "sluicegate-1000r": dict(kind="sluicegate", routes=1000, cases=["ka_small"]),
}
PEERS = ["nginx", "haproxy", "floor"]  # sluicegate is compared with each


def runs_case(name, case_name):
    """Whether proxy `name` can run the case (a case's `proxies` lists the
    proxy kinds that can: the TLS cases leave the floor out)."""
    allowed = CASES[case_name].get("proxies")
    return allowed is None or PROXIES[name]["kind"] in allowed


# Set by main() when a TLS case runs: the certificate and wrk's shim.
TLS = {}


def log(msg):
    print(f"[peers {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ------------------------------------------------------------------ loads


def wrk_argv(port, case, duration):
    scheme = "https" if case.get("tls") else "http"
    argv = ["wrk", "-t1", f"-c{case['conns']}", f"-d{duration}s", "--timeout", "5s",
            "-s", str(HERE / "latency.lua"), "-H", f"Host: {TARGET_HOST}"]
    for h in case.get("headers", []):
        argv += ["-H", h]
    return harness.pinned(LOAD_CPU, argv + [f"{scheme}://127.0.0.1:{port}{case['path']}"])


def parse_wrk(stdout):
    for line in stdout.splitlines():
        if line.startswith("WRK_JSON "):
            data = json.loads(line[len("WRK_JSON "):])
            lat = data["latency_us"]
            errors = sum(data["errors"].values())
            return dict(requests=data["requests"], seconds=data["duration_us"] / 1e6,
                        errors=errors, error_detail=data["errors"],
                        p50_us=lat["p50"], p99_us=lat["p99"], p999_us=lat["p999"],
                        mean_us=lat["mean"], max_us=lat["max"])
    raise RuntimeError("wrk printed no WRK_JSON line:\n" + stdout[-2000:])


def h2load_argv(port, case, duration, log_file):
    return harness.pinned(LOAD_CPU, [
        "h2load", "-t1", f"-c{case['clients']}", f"-m{case['streams']}", "-D", str(duration),
        "--log-file", str(log_file), f"http://127.0.0.1:{port}{case['path']}"])


def percentile(sorted_values, q):
    if not sorted_values:
        return 0
    i = min(len(sorted_values) - 1, max(0, int(round(q / 100 * len(sorted_values) + 0.5)) - 1))
    return sorted_values[i]


def parse_h2load(stdout, log_file):
    m = re.search(r"finished in ([\d.]+)(m?s)", stdout)
    seconds = float(m.group(1)) / (1000 if m.group(2) == "ms" else 1) if m else 0
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                  r"(\d+) failed, (\d+) errored, (\d+) timeout", stdout)
    if not m:
        raise RuntimeError("h2load summary not found:\n" + stdout[-2000:])
    done, ok = int(m.group(3)), int(m.group(4))
    durations = []
    statuses_bad = 0
    with open(log_file) as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 3:
                durations.append(int(parts[2]))
                if not parts[1].startswith("2"):
                    statuses_bad += 1
    durations.sort()
    return dict(requests=done, seconds=seconds, errors=done - ok + statuses_bad,
                error_detail={"failed": int(m.group(5)), "errored": int(m.group(6)),
                              "timeout": int(m.group(7)), "non_2xx": statuses_bad},
                p50_us=percentile(durations, 50), p99_us=percentile(durations, 99),
                p999_us=percentile(durations, 99.9),
                mean_us=sum(durations) / len(durations) if durations else 0,
                max_us=durations[-1] if durations else 0)


def run_tool(proxy, case, duration, workdir):
    """Runs one load; returns the load tool's figures (no CPU accounting)."""
    env = None
    if case["tool"] == "wrk":
        port = proxy.port
        count_file = None
        if case.get("tls"):
            if not proxy.tls_port:
                raise RuntimeError(f"{proxy.name} has no TLS listener")
            port = proxy.tls_port
            count_file = Path(workdir) / f"tls-count-{proxy.name}.txt"
            count_file.unlink(missing_ok=True)
            env = dict(os.environ, LD_PRELOAD=str(TLS["shim"]),
                       WRK_TLS_RESUME="1" if case.get("resume") else "0",
                       WRK_TLS_COUNT=str(count_file))
        argv = wrk_argv(port, case, duration)
        if case.get("delay_ms"):
            env = dict(env or os.environ, WRK_DELAY_MS=str(case["delay_ms"]))
        out = subprocess.run(argv, capture_output=True, text=True, env=env,
                             timeout=duration + 60)
        result = parse_wrk(out.stdout)
        if count_file is not None:
            # Handshakes wrk completed, full and resumed (from the shim).
            try:
                full, resumed = (int(x) for x in count_file.read_text().split())
            except (OSError, ValueError):
                full = resumed = None
            result.update(tls_full=full, tls_resumed=resumed,
                          resumed_pct=100 * resumed / (full + resumed)
                          if full is not None and full + resumed else None)
        return result
    log_file = Path(workdir) / f"h2load-{proxy.name}.log"
    out = subprocess.run(h2load_argv(proxy.h2_port, case, duration, log_file),
                         capture_output=True, text=True, timeout=duration + 60)
    result = parse_h2load(out.stdout, log_file)
    log_file.unlink(missing_ok=True)
    return result


def measure(proxy, case, duration, workdir):
    """One measured load with CPU accounting over exactly the tool's run."""
    pids = proxy.pids()
    u0, s0 = harness.cpu_ticks(pids)
    b0, t0 = harness.core_busy_ticks(PROXY_CPU)
    result = run_tool(proxy, case, duration, workdir)
    u1, s1 = harness.cpu_ticks(pids)
    b1, t1 = harness.core_busy_ticks(PROXY_CPU)
    n = max(result["requests"], 1)
    tick_us = 1e6 / harness.CLK_TCK
    result.update(
        rps=result["requests"] / result["seconds"] if result["seconds"] else 0,
        user_us=(u1 - u0) * tick_us / n,
        sys_us=(s1 - s0) * tick_us / n,
        total_us=((u1 - u0) + (s1 - s0)) * tick_us / n,
        # How busy the proxy core was, and how much of it was the proxy:
        # a proxy share well under the busy figure means something else ran there.
        core0_busy_pct=100 * (b1 - b0) / max(t1 - t0, 1),
        proxy_cpu_pct=100 * ((u1 - u0) + (s1 - s0)) / max(t1 - t0, 1),
        peak_rss_kb=harness.status_kb(pids, "VmHWM"),
    )
    return result


def warm_up(proxy, case, seconds, workdir):
    run_tool(proxy, case, seconds, workdir)


def start_proxy(services, name, origins, workdir):
    spec = PROXIES[name]
    proxy = harness.Proxy(services, name, spec["kind"], origins.addrs, workdir,
                          routes=spec.get("routes", 1), tls=TLS.get("cert"))
    harness.wait_http_ok(proxy.port)
    return proxy


# --------------------------------------------------------- once per proxy


def count_syscalls(services, name, origins, workdir, seconds):
    """System calls per request in a ka_small run and a conn_close run: the
    raw_syscalls:sys_enter tracepoint (perf stat) at full speed, then strace -c
    for the per-call breakdown (slower, so its batching differs a little)."""
    proxy = start_proxy(services, name, origins, workdir)
    out = {}
    try:
        warm_up(proxy, CASES["ka_small"], 1, workdir)
        pid_list = ",".join(str(p) for p in proxy.pids())
        for case_name in ("ka_small", "conn_close"):
            case = CASES[case_name]
            perf_out = Path(workdir) / f"perfstat-{name}-{case_name}.txt"
            perf = subprocess.Popen(["perf", "stat", "-e", "raw_syscalls:sys_enter", "-p",
                                     pid_list, "-x,", "-o", str(perf_out)],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(0.5)
            result = run_tool(proxy, case, seconds, workdir)
            time.sleep(0.2)
            perf.send_signal(signal.SIGINT)
            perf.wait(timeout=30)
            count = None
            for line in perf_out.read_text().splitlines():
                fields = line.split(",")
                if len(fields) > 2 and "raw_syscalls:sys_enter" in fields[2]:
                    count = int(fields[0]) if fields[0].isdigit() else None
            out[case_name] = dict(perf_syscalls_per_req=(count / result["requests"])
                                  if count and result["requests"] else None,
                                  perf_requests=result["requests"])
        # strace: the breakdown by call, keep-alive case only.
        trace_out = Path(workdir) / f"strace-{name}.txt"
        argv = ["strace", "-c", "-f", "-o", str(trace_out)]
        for pid in proxy.pids():
            argv += ["-p", str(pid)]
        strace = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1.0)
        result = run_tool(proxy, CASES["ka_small"], seconds, workdir)
        time.sleep(0.2)
        strace.send_signal(signal.SIGINT)
        strace.wait(timeout=60)
        calls, total = parse_strace(trace_out.read_text())
        n = max(result["requests"], 1)
        out["ka_small"].update(
            strace_syscalls_per_req=total / n,
            strace_requests=result["requests"],
            strace_breakdown={k: round(v / n, 3) for k, v in
                              sorted(calls.items(), key=lambda kv: -kv[1])[:12]},
        )
    finally:
        proxy.stop()
    return out


def parse_strace(text):
    """strace -c summary → ({syscall: calls}, total calls)."""
    calls, total = {}, 0
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 5 or not fields[0][0].isdigit():
            continue
        # % time, seconds, usecs/call, calls, [errors], syscall
        name = fields[-1]
        if name == "total":
            total = int(fields[3])
        else:
            calls[name] = int(fields[3])
    return calls, total or sum(calls.values())


def idle_memory(services, name, origins, workdir, count):
    """RSS per idle keep-alive client connection: fresh proxy, 1 s warm-up,
    RSS before, `count` connections that made one request and sit idle,
    RSS after."""
    proxy = start_proxy(services, name, origins, workdir)
    client = None
    try:
        warm_up(proxy, CASES["ka_small"], 1, workdir)
        time.sleep(1.0)
        pids = proxy.pids()
        before = harness.status_kb(pids, "VmRSS")
        client = subprocess.Popen(
            harness.pinned(LOAD_CPU, [sys.executable, HERE / "idle_conns.py", proxy.port,
                                      count, TARGET_HOST]),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            preexec_fn=harness.raise_nofile)
        line = client.stdout.readline().split()
        ok = int(line[1]) if len(line) == 3 and line[0] == "READY" else 0
        failed = int(line[2]) if len(line) == 3 else count
        time.sleep(2.0)
        after = harness.status_kb(proxy.pids(), "VmRSS")
        return dict(connections=ok, failed=failed, rss_before_kb=before, rss_after_kb=after,
                    bytes_per_conn=(after - before) * 1024 / ok if ok else None)
    finally:
        proxy.stop()  # the proxy first: its side takes the TIME_WAITs
        if client is not None:
            try:
                client.communicate("\n", timeout=60)
            except subprocess.TimeoutExpired:
                client.kill()
                client.wait()


def perf_profile(services, name, origins, workdir, seconds):
    """perf record -e cpu-clock on the proxy during a ka_small run; top
    symbols by self time (user and kernel) and the user/kernel split."""
    proxy = start_proxy(services, name, origins, workdir)
    data = OUT / f"perf-{name}.data"
    try:
        warm_up(proxy, CASES["ka_small"], 1, workdir)
        rec = subprocess.Popen(["perf", "record", "-e", "cpu-clock", "-F", "4999", "-p",
                                ",".join(str(p) for p in proxy.pids()), "-o", str(data)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        run_tool(proxy, CASES["ka_small"], seconds, workdir)
        rec.send_signal(signal.SIGINT)
        rec.wait(timeout=60)
    finally:
        proxy.stop()
    report = subprocess.run(["perf", "report", "-i", str(data), "--stdio", "--no-children",
                             "--sort", "dso,sym", "--percent-limit", "0.3"],
                            capture_output=True, text=True).stdout
    (OUT / f"perf-{name}.txt").write_text(report)
    top, kernel_pct = [], 0.0
    for line in report.splitlines():
        m = re.match(r"\s*([\d.]+)%\s+(\S+)\s+\[([k.])\]\s+(.*)", line)
        if not m:
            continue
        pct, dso, space, sym = float(m.group(1)), m.group(2), m.group(3), m.group(4).strip()
        if space == "k":
            kernel_pct += pct
        top.append(dict(pct=pct, dso=dso, kernel=space == "k", symbol=sym))
    return dict(top=top[:40], kernel_pct_listed=round(kernel_pct, 1),
                report=str(OUT / f"perf-{name}.txt"))


# ---------------------------------------------------------------- report


METRICS = ["rps", "p50_us", "p99_us", "p999_us", "user_us", "sys_us", "total_us",
           "core0_busy_pct", "proxy_cpu_pct", "peak_rss_kb", "errors", "resumed_pct"]


def summarize(runs):
    """Median (and min, max) of every metric per (proxy, case)."""
    groups = {}
    for r in runs:
        groups.setdefault((r["proxy"], r["case"]), []).append(r)
    out = {}
    for (proxy, case), rs in groups.items():
        entry = {"rounds": len(rs)}
        for m in METRICS:
            values = [r[m] for r in rs if r.get(m) is not None]
            if values:
                entry[m] = dict(median=statistics.median(values), min=min(values),
                                max=max(values))
        out.setdefault(case, {})[proxy] = entry
    return out


def med(summary, case, proxy, metric):
    try:
        return summary[case][proxy][metric]["median"]
    except KeyError:
        return None


def ratio(a, b):
    return a / b if a is not None and b else None


def fmt(v, digits=2):
    if v is None:
        return "–"
    if isinstance(v, float) and abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.{digits}f}" if isinstance(v, float) else f"{v:,}"


def ms(us):
    return None if us is None else us / 1000


def metrics_note(results):
    status = results.get("sluicegate_metrics_status")
    if status == 200:
        return ("sluicegate metrics on (GET /metrics answered 200; there is no switch "
                "to turn them off).")
    return (f"sluicegate GET /metrics answered {status}: metrics not available in this "
            "build, so 'metrics on' is not measured.")


def render_markdown(results):
    s = results["summary"]
    once = results["per_proxy"]
    env = results["environment"]
    lines = [f"# Peer benchmark results ({'quick' if results['quick'] else 'full'} run)", "",
             f"{env['date']} · {env['cpu']} · {env['cores']} cores · kernel {env['kernel']} · "
             f"binaries built {env.get('binaries_built', '?')} from "
             f"{env.get('binaries_commit', env['sluicegate_commit'])}"
             f"{' + uncommitted changes' if env.get('binaries_dirty_tree') else ''}"
             f" · {env['nginx']} · {env['haproxy'].split(' - ')[0]} · {env['wrk']} · "
             f"{env['h2load']}", "",
             f"{results['rounds']} round(s) × {results['duration_s']} s per case; medians "
             "(user µs/req: median (min–max)); proxy on core 0, load + origins on core 1; "
             f"priority: {results.get('priority', '?')}. {metrics_note(results)}", ""]

    def case_table(case, proxies, with_once=False):
        spec = CASES.get(case, {})
        head = ["proxy", "handshakes/s (= req/s)" if spec.get("per_handshake") else "req/s",
                "p50 ms", "p99 ms", "p99.9 ms", "user µs/req",
                "sys µs/req", "total µs/req", "proxy CPU %"]
        if with_once:
            head += ["syscalls/req", "peak RSS MiB", "idle KiB/conn"]
        if spec.get("tls"):
            head += ["resumed %"]
        rows = []

        def row_values(p):
            vals = [med(s, case, p, "rps"), ms(med(s, case, p, "p50_us")),
                    ms(med(s, case, p, "p99_us")), ms(med(s, case, p, "p999_us")),
                    med(s, case, p, "user_us"), med(s, case, p, "sys_us"),
                    med(s, case, p, "total_us"), med(s, case, p, "proxy_cpu_pct")]
            if with_once:
                o = once.get(p, {})
                sc = o.get("syscalls", {}).get("ka_small", {}).get("perf_syscalls_per_req")
                peak = med(s, case, p, "peak_rss_kb")
                idle = o.get("idle", {}).get("bytes_per_conn")
                vals += [sc, peak / 1024 if peak else None, idle / 1024 if idle else None]
            if spec.get("tls"):
                vals += [med(s, case, p, "resumed_pct")]
            return vals

        table = {p: row_values(p) for p in proxies if p in s.get(case, {})}
        for p, vals in table.items():
            user = s[case][p].get("user_us", {})
            cells = [fmt(v) for v in vals]
            if user:
                cells[4] = f"{user['median']:.2f} ({user['min']:.2f}–{user['max']:.2f})"
            rows.append([p] + cells)
        if "sluicegate" in table:
            for peer in PEERS:
                if peer in table:
                    rows.append([f"**sluicegate / {peer}**"] + [
                        fmt(ratio(a, b)) for a, b in zip(table["sluicegate"], table[peer])])
        out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        out += ["| " + " | ".join(r) + " |" for r in rows]
        return out

    order = ["nginx", "haproxy", "sluicegate", "floor"]
    for case_name, case in CASES.items():
        if case_name not in s:
            continue
        lines += [f"## {case_name}: {case['title']}", ""]
        lines += case_table(case_name, order, with_once=case_name == "ka_small")
        if case.get("tls"):
            lines += ["", "resumed %: handshakes wrk completed with a resumed session "
                      "(SSL_session_reused, counted by wrk_tls_shim.c)."]
        lines += [""]
    if "sluicegate-1000r" in s.get("ka_small", {}):
        one, many = (med(s, "ka_small", p, "user_us") for p in ("sluicegate", "sluicegate-1000r"))
        lines += ["## 1,000 routes vs 1 route (sluicegate, ka_small)", "",
                  "| config | req/s | p99 ms | user µs/req | total µs/req |", "|---|---|---|---|---|"]
        for p, label in (("sluicegate", "1 route"), ("sluicegate-1000r", "1,000 routes")):
            lines.append(f"| {label} | {fmt(med(s, 'ka_small', p, 'rps'))} | "
                         f"{fmt(ms(med(s, 'ka_small', p, 'p99_us')))} | "
                         f"{fmt(med(s, 'ka_small', p, 'user_us'))} | "
                         f"{fmt(med(s, 'ka_small', p, 'total_us'))} |")
        lines += ["", f"user CPU ratio 1,000 / 1 routes: {fmt(ratio(many, one), 3)}", ""]
    sys_rows = [(p, o["syscalls"]) for p, o in once.items() if "syscalls" in o]
    if sys_rows:
        lines += ["## System calls per request", "",
                  "| proxy | keep-alive (perf) | conn-per-request (perf) | keep-alive (strace -c) "
                  "| top calls per request (strace) |", "|---|---|---|---|---|"]
        for p, sc in sys_rows:
            ka, cc = sc.get("ka_small", {}), sc.get("conn_close", {})
            top = ", ".join(f"{k} {v}" for k, v in list(ka.get("strace_breakdown", {}).items())[:6])
            lines.append(f"| {p} | {fmt(ka.get('perf_syscalls_per_req'))} | "
                         f"{fmt(cc.get('perf_syscalls_per_req'))} | "
                         f"{fmt(ka.get('strace_syscalls_per_req'))} | {top} |")
        lines += [""]
    idle_rows = [(p, o["idle"]) for p, o in once.items() if "idle" in o]
    if idle_rows:
        lines += ["## Memory per idle keep-alive client connection", "",
                  "| proxy | connections | RSS before MiB | RSS after MiB | KiB per connection |",
                  "|---|---|---|---|---|"]
        for p, i in idle_rows:
            lines.append(f"| {p} | {i['connections']:,} | {i['rss_before_kb'] / 1024:.1f} | "
                         f"{i['rss_after_kb'] / 1024:.1f} | "
                         f"{fmt(i['bytes_per_conn'] / 1024 if i['bytes_per_conn'] else None)} |")
        lines += [""]
    if results.get("targets"):
        lines += ["## Targets (issue 17)", "", "| target | value | met |", "|---|---|---|"]
        for t in results["targets"]:
            met = "–" if t["met"] is None else ("yes" if t["met"] else "**no**")
            lines.append(f"| {t['target']} | {t['value']} | {met} |")
        lines += [""]
    for p, o in once.items():
        if "perf" in o:
            lines += [f"## perf cpu-clock profile: {p} (ka_small, self time)", "", "```"]
            lines += [f"{t['pct']:5.1f}%  {'[k]' if t['kernel'] else '   '} {t['symbol'][:110]}"
                      for t in o["perf"]["top"][:25]]
            lines += ["```", ""]
    return "\n".join(lines) + "\n"


def targets(results):
    """Issue 17's targets from the summary medians; `met` is None when a figure
    is missing (a case or proxy not in this run, or an older results file)."""
    s, once = results["summary"], results["per_proxy"]
    out = []

    def add(name, value, met, inputs=()):
        # Nothing measured for it (e.g. a case not in this run, an older file):
        # no figure in the value, or every input missing.
        if met is None and (not re.search(r"\d", value)
                            or (inputs and all(x is None for x in inputs))):
            value = "–"
        out.append(dict(target=name, value=value, met=met))

    def le(a, b, factor=1.0):
        return None if a is None or b is None else a <= factor * b

    def both(*mets):
        return None if None in mets else all(mets)

    def m(case, metric, *proxies):
        return [med(s, case, p, metric) for p in proxies]

    def better_peer(case, metric):
        """(name, value) of the peer (nginx or HAProxy) with the lower median."""
        have = [(v, p) for p, v in zip(("nginx", "haproxy"), m(case, metric, "nginx", "haproxy"))
                if v is not None]
        if not have:
            return None, None
        v, p = min(have)
        return p, v

    # ka_small
    sg, ng, hp = m("ka_small", "user_us", "sluicegate", "nginx", "haproxy")
    r1, r2 = ratio(sg, ng), ratio(sg, hp)
    add("ka_small: user CPU/req ≤ 0.70 × nginx and ≤ 0.50 × HAProxy",
        f"{fmt(r1)} × nginx, {fmt(r2)} × HAProxy", both(le(r1, 0.70), le(r2, 0.50)))
    peer, tp = better_peer("ka_small", "total_us")
    tg = med(s, "ka_small", "sluicegate", "total_us")
    add("ka_small: total CPU/req ≤ 0.90 × the better peer (lower total of nginx, HAProxy)",
        f"{fmt(tg)} vs {fmt(tp)} µs ({peer or '–'}): {fmt(ratio(tg, tp))} ×", le(tg, tp, 0.90))
    rg = med(s, "ka_small", "sluicegate", "rps")
    rp = med(s, "ka_small", peer, "rps") if peer else None
    add("ka_small: req/s ≥ 1.1 × that peer's req/s",
        f"{fmt(rg)} vs {fmt(rp)} ({peer or '–'}): {fmt(ratio(rg, rp))} ×",
        None if rg is None or rp is None else rg >= 1.1 * rp)

    def syscalls(p):
        return once.get(p, {}).get("syscalls", {}).get("ka_small", {}).get(
            "perf_syscalls_per_req")
    scg, scn = syscalls("sluicegate"), syscalls("nginx")
    add("ka_small: system calls/req (perf) ≤ nginx's", f"{fmt(scg)} vs {fmt(scn)}",
        le(scg, scn))

    # h2c, conn_close, ka_64k against nginx
    ug, un = m("h2c", "user_us", "sluicegate", "nginx")
    tg, tn = m("h2c", "total_us", "sluicegate", "nginx")
    add("h2c: user CPU/req ≤ 1.0 × nginx and total ≤ 1.0 × nginx",
        f"user {fmt(ratio(ug, un))} ×, total {fmt(ratio(tg, tn))} × nginx",
        both(le(ug, un), le(tg, tn)))
    for case in ("conn_close", "ka_64k"):
        tg, tn = m(case, "total_us", "sluicegate", "nginx")
        add(f"{case}: total CPU/req ≤ 1.0 × nginx",
            f"{fmt(tg)} vs {fmt(tn)} µs: {fmt(ratio(tg, tn))} ×", le(tg, tn))

    ig = once.get("sluicegate", {}).get("idle", {}).get("bytes_per_conn")
    add("idle keep-alive connection ≤ 1.5 KiB", f"{fmt(ig / 1024 if ig else None)} KiB",
        le(ig, 1.5 * 1024))

    # TLS
    tg, tn = m("tls_ka", "total_us", "sluicegate", "nginx")
    pg, pn = m("tls_ka", "p99_us", "sluicegate", "nginx")
    add("tls_ka: total CPU/req ≤ 1.0 × nginx and p99 ≤ nginx's",
        f"total {fmt(ratio(tg, tn))} × nginx; p99 {fmt(ms(pg))} vs {fmt(ms(pn))} ms",
        both(le(tg, tn), le(pg, pn)), inputs=(tg, tn, pg, pn))
    tg, tn = m("tls_handshake", "total_us", "sluicegate", "nginx")
    rg, rn = m("tls_handshake", "rps", "sluicegate", "nginx")
    add("tls_handshake: handshakes per CPU-second ≥ nginx's (total CPU/req ≤ nginx's; "
        "req/s ratio shown)",
        f"{fmt(1e6 / tg if tg else None)} vs {fmt(1e6 / tn if tn else None)} per CPU-s "
        f"({fmt(ratio(tg, tn))} × nginx's CPU); req/s {fmt(ratio(rg, rn))} × nginx",
        le(tg, tn))

    # p99 in every case present
    for case in CASES:
        if case not in s or "sluicegate" not in s[case]:
            continue
        peer, pp = better_peer(case, "p99_us")
        pg = med(s, case, "sluicegate", "p99_us")
        add(f"{case}: p99 ≤ 1.1 × the better peer's p99",
            f"{fmt(ms(pg))} vs {fmt(ms(pp))} ms ({peer or '–'}): {fmt(ratio(pg, pp))} ×",
            le(pg, pp, 1.1))

    one = med(s, "ka_small", "sluicegate", "user_us")
    many = med(s, "ka_small", "sluicegate-1000r", "user_us")
    r = ratio(many, one)
    add("1,000 routes: user CPU/req within 5 % of 1 route", fmt(r, 3),
        None if r is None else r <= 1.05)
    return out


# ------------------------------------------------------------------ main


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="1 round of 3 s per case")
    ap.add_argument("--rounds", type=int, help="rounds (default 5, quick 1)")
    ap.add_argument("--duration", type=int, help="seconds per measured case (default 10, quick 3)")
    ap.add_argument("--proxies", default=",".join(PROXIES), help="comma-separated subset")
    ap.add_argument("--cases", default=",".join(CASES), help="comma-separated subset")
    ap.add_argument("--idle-conns", type=int, default=10_000)
    ap.add_argument("--nice", type=int, default=harness.NICE,
                    help="niceness of every process started (default -19; 0 = off)")
    ap.add_argument("--report-only", metavar="JSON",
                    help="re-render the Markdown of an earlier results file and exit")
    ap.add_argument("--skip-once", action="store_true",
                    help="skip syscalls, idle memory and perf profiles")
    args = ap.parse_args()
    if args.report_only:
        path = Path(args.report_only)
        results = json.loads(path.read_text())
        results["targets"] = targets(results)
        md = render_markdown(results)
        path.with_suffix(".md").write_text(md)
        print(md)
        return
    harness.NICE = args.nice
    priority = harness.prioritize()
    rounds = args.rounds or (1 if args.quick else 5)
    duration = args.duration or (3 if args.quick else 10)
    warm = 1 if args.quick else 2
    proxies = [p for p in args.proxies.split(",") if p]
    cases = [c for c in args.cases.split(",") if c]
    for p in proxies:
        if p not in PROXIES:
            raise SystemExit(f"unknown proxy {p}; known: {', '.join(PROXIES)}")
    for c in cases:
        if c not in CASES:
            raise SystemExit(f"unknown case {c}; known: {', '.join(CASES)}")

    OUT.mkdir(parents=True, exist_ok=True)
    services = harness.Services()
    workdir = Path(tempfile.mkdtemp(prefix="sluicegate-peers-"))
    workdir.chmod(0o755)  # nginx workers run as nobody and read the 64 KiB file
    log(f"work dir {workdir}; priority: {priority}")
    results = dict(quick=args.quick, rounds=rounds, duration_s=duration, priority=priority,
                   environment=harness.environment(),
                   cases={c: CASES[c] for c in cases}, runs=[], per_proxy={})
    if any(CASES[c].get("tls") for c in cases):
        TLS["cert"] = harness.make_cert(workdir)
        TLS["shim"] = harness.build_tls_shim(workdir)
        log(f"TLS: certificate {TLS['cert']['cert']} (ECDSA P-256), wrk shim {TLS['shim']}")
    origins = harness.Origins(services, workdir)
    log(f"origins on {', '.join(origins.addrs)}")

    def cases_of(name):
        return [c for c in PROXIES[name].get("cases", cases) if c in cases and runs_case(name, c)]

    for name in proxies:
        skipped = [c for c in PROXIES[name].get("cases", cases)
                   if c in cases and not runs_case(name, c)]
        if skipped:
            log(f"{name} skips {', '.join(skipped)}: not a {PROXIES[name]['kind']} case "
                f"(TLS cases run on {', '.join(TLS_PROXIES)})")

    for rnd in range(rounds):
        order = proxies[rnd % len(proxies):] + proxies[:rnd % len(proxies)]
        order = [p for p in order if cases_of(p)]
        log(f"round {rnd + 1}/{rounds}: {' '.join(order)}")
        for name in order:
            proxy = start_proxy(services, name, origins, workdir)
            if name == "sluicegate" and "sluicegate_metrics_status" not in results:
                results["sluicegate_metrics_status"] = proxy.metrics_status()
            try:
                warm_up(proxy, CASES["ka_small"], warm, workdir)
                for case_name in cases_of(name):
                    case = CASES[case_name]
                    warm_up(proxy, case, 1, workdir)
                    r = measure(proxy, case, duration, workdir)
                    r.update(round=rnd + 1, proxy=name, case=case_name)
                    results["runs"].append(r)
                    log(f"  {name:17} {case_name:10} {r['rps']:9.0f} req/s  "
                        f"p99 {r['p99_us'] / 1000:6.2f} ms  user {r['user_us']:5.2f} "
                        f"sys {r['sys_us']:5.2f} µs/req  core0 {r['core0_busy_pct']:3.0f}% "
                        f"(proxy {r['proxy_cpu_pct']:3.0f}%)"
                        + (f"  handshakes {r['tls_full']} full / {r['tls_resumed']} resumed"
                           if "tls_full" in r else "")
                        + (f"  ERRORS {r['error_detail']}" if r["errors"] else ""))
                if not proxy.svc.alive():
                    raise RuntimeError(f"{name} died:\n{proxy.svc.tail()}")
            finally:
                proxy.stop()

    if not args.skip_once:
        once_seconds = 2 if args.quick else 4
        for name in proxies:
            if name == "sluicegate-1000r":
                continue
            entry = results["per_proxy"].setdefault(name, {})
            log(f"{name}: system calls per request")
            entry["syscalls"] = count_syscalls(services, name, origins, workdir, once_seconds)
            log(f"{name}: memory with {args.idle_conns:,} idle connections")
            entry["idle"] = idle_memory(services, name, origins, workdir, args.idle_conns)
            log(f"  {entry['idle']}")
            if name in ("sluicegate", "floor"):
                log(f"{name}: perf profile")
                entry["perf"] = perf_profile(services, name, origins, workdir, once_seconds + 2)

    results["summary"] = summarize(results["runs"])
    results["targets"] = targets(results)
    stem = "results-quick" if args.quick else "results"
    harness.write_json(OUT / f"{stem}.json", results)
    md = render_markdown(results)
    (OUT / f"{stem}.md").write_text(md)
    services.stop_all()
    shutil.rmtree(workdir, ignore_errors=True)
    print(md)
    log(f"wrote {OUT / (stem + '.json')} and {OUT / (stem + '.md')}")


if __name__ == "__main__":
    main()
