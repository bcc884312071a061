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
}

PROXIES = {
    "nginx": dict(kind="nginx"),
    "haproxy": dict(kind="haproxy"),
    "sluicegate": dict(kind="sluicegate"),
    "floor": dict(kind="floor"),
    "sluicegate-1000r": dict(kind="sluicegate", routes=1000, cases=["ka_small"]),
}
PEERS = ["nginx", "haproxy", "floor"]  # sluicegate is compared with each


def log(msg):
    print(f"[peers {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ------------------------------------------------------------------ loads


def wrk_argv(port, case, duration):
    argv = ["wrk", "-t1", f"-c{case['conns']}", f"-d{duration}s", "--timeout", "5s",
            "-s", str(HERE / "latency.lua"), "-H", f"Host: {TARGET_HOST}"]
    for h in case.get("headers", []):
        argv += ["-H", h]
    return harness.pinned(LOAD_CPU, argv + [f"http://127.0.0.1:{port}{case['path']}"])


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
        argv = wrk_argv(proxy.port, case, duration)
        if case.get("delay_ms"):
            env = dict(os.environ, WRK_DELAY_MS=str(case["delay_ms"]))
        out = subprocess.run(argv, capture_output=True, text=True, env=env,
                             timeout=duration + 60)
        return parse_wrk(out.stdout)
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
                          routes=spec.get("routes", 1))
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
           "core0_busy_pct", "proxy_cpu_pct", "peak_rss_kb", "errors"]


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
        head = ["proxy", "req/s", "p50 ms", "p99 ms", "p99.9 ms", "user µs/req",
                "sys µs/req", "total µs/req", "proxy CPU %"]
        if with_once:
            head += ["syscalls/req", "peak RSS MiB", "idle KiB/conn"]
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
        lines += ["## Targets (issue 9)", "", "| target | value | met |", "|---|---|---|"]
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
    s, once = results["summary"], results["per_proxy"]
    out = []

    def add(name, value, met):
        out.append(dict(target=name, value=value, met=met))

    sg, ng, hp = (med(s, "ka_small", p, "user_us") for p in ("sluicegate", "nginx", "haproxy"))
    r1, r2 = ratio(sg, ng), ratio(sg, hp)
    add("user CPU/req ≤ 0.8 × nginx and ≤ 0.8 × HAProxy (ka_small)",
        f"{fmt(r1)} × nginx, {fmt(r2)} × HAProxy",
        None if r1 is None or r2 is None else r1 <= 0.8 and r2 <= 0.8)
    tg, tn, th = (med(s, "ka_small", p, "total_us") for p in ("sluicegate", "nginx", "haproxy"))
    add("total CPU/req ≤ both (ka_small)", f"{fmt(tg)} vs {fmt(tn)} / {fmt(th)} µs",
        None if None in (tg, tn, th) else tg <= tn and tg <= th)
    sc = once.get("sluicegate", {}).get("syscalls", {}).get("ka_small", {}).get(
        "perf_syscalls_per_req")
    add("system calls/req ≤ 4.5 (ka_small)", fmt(sc), None if sc is None else sc <= 4.5)
    pg, pn, ph = (med(s, "paced", p, "p99_us") for p in ("sluicegate", "nginx", "haproxy"))
    add("p99 ≤ the better of nginx and HAProxy at the same offered load (paced)",
        f"{fmt(ms(pg))} ms vs {fmt(ms(pn))} / {fmt(ms(ph))} ms",
        None if None in (pg, pn, ph) else pg <= min(pn, ph))
    one = med(s, "ka_small", "sluicegate", "user_us")
    many = med(s, "ka_small", "sluicegate-1000r", "user_us")
    r = ratio(many, one)
    add("1,000 routes: user CPU/req within 5 % of 1 route", fmt(r, 3),
        None if r is None else r <= 1.05)
    ig = once.get("sluicegate", {}).get("idle", {}).get("bytes_per_conn")
    inn = once.get("nginx", {}).get("idle", {}).get("bytes_per_conn")
    add("idle keep-alive connection memory ≤ nginx's",
        f"{fmt(ig / 1024 if ig else None)} vs {fmt(inn / 1024 if inn else None)} KiB",
        None if ig is None or inn is None else ig <= inn)
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
    origins = harness.Origins(services, workdir)
    log(f"origins on {', '.join(origins.addrs)}")

    for rnd in range(rounds):
        order = proxies[rnd % len(proxies):] + proxies[:rnd % len(proxies)]
        log(f"round {rnd + 1}/{rounds}: {' '.join(order)}")
        for name in order:
            proxy = start_proxy(services, name, origins, workdir)
            if name == "sluicegate" and "sluicegate_metrics_status" not in results:
                results["sluicegate_metrics_status"] = proxy.metrics_status()
            try:
                warm_up(proxy, CASES["ka_small"], warm, workdir)
                for case_name in PROXIES[name].get("cases", cases):
                    if case_name not in cases:
                        continue
                    case = CASES[case_name]
                    warm_up(proxy, case, 1, workdir)
                    r = measure(proxy, case, duration, workdir)
                    r.update(round=rnd + 1, proxy=name, case=case_name)
                    results["runs"].append(r)
                    log(f"  {name:17} {case_name:10} {r['rps']:9.0f} req/s  "
                        f"p99 {r['p99_us'] / 1000:6.2f} ms  user {r['user_us']:5.2f} "
                        f"sys {r['sys_us']:5.2f} µs/req  core0 {r['core0_busy_pct']:3.0f}% "
                        f"(proxy {r['proxy_cpu_pct']:3.0f}%)"
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
