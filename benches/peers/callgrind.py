"""Instructions per request under callgrind: sluicegate and the floor binary,
with a per-feature breakdown as far as config knobs (sluicegate) and flags
(floor) can drive it.

Run through callgrind.sh (which installs valgrind and builds the binaries):
    bash benches/peers/callgrind.sh

Method: each variant runs twice under `valgrind --tool=callgrind`, once with
WARM keep-alive requests and once with WARM + COUNT, from fixed_client.py (one
connection, one request at a time, the same bytes every run). The difference
divided by COUNT is the cost of one steady-state request: start-up, the first
upstream connect, the warm-up and shutdown cancel out. The readiness check
reads /proc/net/tcp, so it sends nothing to the proxy. Callgrind counts
instructions, not time, so the figures do not depend on what else the machine
is doing (they move by a few instructions per request between runs: timer and
wake-up order). Results: target/peers/callgrind.json and callgrind.md; the
callgrind.out files under target/peers/callgrind/.
"""

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402
from harness import HERE, LOAD_CPU, OUT, TARGET_HOST  # noqa: E402

CG_DIR = OUT / "callgrind"

# (name, kind, options, base variant, what it adds over the base)
VARIANTS = [
    ("floor-bare", "floor", dict(flags=[], origins=1), None,
     "hyper http1 server + legacy client, one upstream"),
    ("floor-split", "floor", dict(flags=[], origins=2), "floor-bare",
     "90/10 over two upstreams (counter)"),
    ("floor-xff", "floor", dict(flags=["--xff"], origins=2), "floor-split",
     "+ X-Forwarded-For"),
    ("floor", "floor", dict(flags=["--xff", "--auto"], origins=2), "floor-xff",
     "+ hyper-util auto server (h1 + h2c): the floor of the load table"),
    ("sg-min", "sluicegate", dict(split=False, retries=0, failover=False), "floor",
     "1 route, 1 backend, retries 0, failover off"),
    ("sg-retries", "sluicegate", dict(split=False), "sg-min",
     "+ retries 2, failover on (the defaults): request parts kept for replay"),
    ("sg-split", "sluicegate", dict(), "sg-retries",
     "+ 90/10 split over two backends (= the load table's config)"),
    ("sg-split-repeat", "sluicegate", dict(), "sg-split",
     "the same again: how repeatable the count is"),
    ("sg-1000r", "sluicegate", dict(routes=1000), "sg-split",
     "+ 1,000 routes (the request matches the last)"),
    ("sg-sticky", "sluicegate", dict(sticky_header="x-user-id", header="x-user-id: 42"),
     "sg-split", "+ sticky = { header = \"x-user-id\" }, request carries the header"),
]

# Background work that runs on a clock, not per request: under callgrind a
# longer run does more of it, so it is shown apart. sluicegate re-reads and
# hashes its config file in a loop (the file watcher wakes on the IN_OPEN /
# IN_CLOSE_NOWRITE events of its own read, every ~25 ms debounce).
BACKGROUND = ["sluicegate::reload::Reloader::watch::{{closure}}",
              "notify::inotify::EventLoop::event_loop_thread"]

# Features the issue asks to price that have no knob (yet): always on, or not built.
NO_KNOB = [
    ("metrics", "no switch: on whenever the build has them (see the metrics line above)"),
    ("X-Forwarded-* and hop-by-hop stripping", "always on in sluicegate: priced on the floor "
     "(floor-split → floor-xff adds X-Forwarded-For only)"),
    ("retries bookkeeping off with failover on", "retries = 0 also turns off the replay copy; "
     "sg-min has both off"),
    ("passive health (outlier) bookkeeping", "always on: record_success per request"),
    ("timeouts (connect, response headers, header read)", "always on"),
]


def log(msg):
    print(f"[callgrind {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def total_ir(path):
    for line in Path(path).read_text(errors="replace").splitlines():
        if line.startswith("totals:") or line.startswith("summary:"):
            return int(line.split()[1])
    raise RuntimeError(f"no totals in {path}")


LINE = re.compile(r"^\s*([\d,]+)\s+(?:\(\s*[\d.]+%\)\s+)?(<|\*|>)?\s*(.+?)\s*$")


def clean_name(name):
    """"file:function (Nx) [object]" → "function"."""
    name = re.sub(r"\s+\[[^\]]*\]$", "", name)
    name = re.sub(r"\s+\([\d,]+x\)$", "", name)
    m = re.match(r"^(\?\?\?|[^\s:]+\.(?:rs|c|h|S|s)):(.*)$", name)
    return m.group(2) if m else name


def annotate(path, inclusive):
    """{function: Ir} from callgrind_annotate."""
    out = subprocess.run(["callgrind_annotate", "--threshold=100",
                          f"--inclusive={'yes' if inclusive else 'no'}", str(path)],
                         capture_output=True, text=True).stdout
    funcs = {}
    for line in out.splitlines():
        m = LINE.match(line)
        if not m or m.group(2) or "PROGRAM TOTALS" in line or ":" not in m.group(3):
            continue
        name = clean_name(m.group(3))
        funcs[name] = funcs.get(name, 0) + int(m.group(1).replace(",", ""))
    return funcs


def callers(path, targets):
    """{target: {caller: Ir}}: who calls memcpy, malloc, free (inclusive cost
    of the target under each caller), from callgrind_annotate --tree=caller."""
    out = subprocess.run(["callgrind_annotate", "--threshold=100", "--tree=caller", str(path)],
                         capture_output=True, text=True).stdout
    found = {t: {} for t in targets}
    counts = {t: 0 for t in targets}
    block = []
    for line in out.splitlines():
        m = LINE.match(line)
        if not m:
            block = []
            continue
        if m.group(2) == "<":
            calls = re.search(r"\(([\d,]+)x\)", m.group(3))
            block.append((clean_name(m.group(3)), int(m.group(1).replace(",", "")),
                          int(calls.group(1).replace(",", "")) if calls else 0))
        elif m.group(2) == "*":
            name = clean_name(m.group(3))
            for t in targets:
                if name == t:
                    for caller, ir, n in block:
                        found[t][caller] = found[t].get(caller, 0) + ir
                        counts[t] += n
            block = []
    return found, counts


def run_once(services, name, kind, opts, origins, workdir, requests):
    """One callgrind run with `requests` requests; returns the out file."""
    out_file = CG_DIR / f"{name}.{requests}.out"
    out_file.unlink(missing_ok=True)
    valgrind = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out_file}"]
    addrs = origins.addrs[: opts.get("origins", 2)]
    sg_opts = {k: v for k, v in opts.items() if k in ("split", "retries", "failover",
                                                      "sticky_header")}
    proxy = harness.Proxy(services, f"{name}-{requests}", kind, addrs, workdir,
                          routes=opts.get("routes", 1), valgrind=valgrind,
                          floor_flags=opts.get("flags", []), sluicegate_opts=sg_opts)
    try:
        argv = [sys.executable, HERE / "fixed_client.py", proxy.port, requests, TARGET_HOST]
        if opts.get("header"):
            argv.append(opts["header"])
        done = subprocess.run(harness.pinned(LOAD_CPU, argv), capture_output=True, text=True,
                              timeout=1800)
        if done.returncode != 0:
            raise RuntimeError(f"{name}: client failed: {done.stdout}{done.stderr}\n"
                               f"{proxy.svc.tail()}")
    finally:
        proxy.stop()
    return out_file


def strip_generics(text):
    while True:
        shorter = re.sub(r"<[^<>]*>", "", text)
        if shorter == text:
            return text
        text = shorter


def metrics_status(services, origins, workdir):
    """Status of sluicegate's GET /metrics, from a run outside valgrind (so
    the measured runs get no admin request)."""
    proxy = harness.Proxy(services, "metrics-probe", "sluicegate", origins.addrs, workdir)
    try:
        harness.wait_http_ok(proxy.port)
        return proxy.metrics_status()
    finally:
        proxy.stop()


def group(func):
    """A coarse owner for a function: crate::module (for `<T as Trait>::f`,
    the module of T), or the libc family."""
    if re.match(r"^(_int_malloc|malloc|_int_free|free|cfree|realloc|_int_realloc|"
                r"unlink_chunk|malloc_consolidate|tcache)", func):
        return "libc malloc/free"
    if re.search(r"mem(move|cpy|set|cmp)", func):
        return "libc mem*"
    m = re.match(r"^<(.+?) as ", func)
    path = strip_generics(m.group(1) if m else func).lstrip("&").replace("mut ", "")
    parts = [p for p in path.split("::") if p]
    if len(parts) >= 2:
        depth = 3 if parts[0] in ("hyper", "hyper_util", "tokio") else 2
        return "::".join(parts[:depth])
    return path or func


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--warm", type=int, default=200)
    ap.add_argument("--only", help="comma-separated variant names")
    args = ap.parse_args()
    only = set(args.only.split(",")) if args.only else None

    CG_DIR.mkdir(parents=True, exist_ok=True)
    services = harness.Services()
    workdir = Path(tempfile.mkdtemp(prefix="sluicegate-callgrind-"))
    workdir.chmod(0o755)
    origins = harness.Origins(services, workdir)
    results = dict(environment=harness.environment(), requests=args.requests, warm=args.warm,
                   variants={}, functions={}, metrics_status=metrics_status(services, origins,
                                                                            workdir))
    selfs = {}
    for name, kind, opts, _base, what in VARIANTS:
        if only and name not in only:
            continue
        log(f"{name}: {what}")
        files = [run_once(services, name, kind, opts, origins, workdir, n)
                 for n in (args.warm, args.warm + args.requests)]
        a, b = (total_ir(f) for f in files)
        per_req = (b - a) / args.requests
        ia, ib = (annotate(f, inclusive=True) for f in files)
        incl = {k: (ib.get(k, 0) - ia.get(k, 0)) / args.requests for k in set(ia) | set(ib)}
        background = sum(incl.get(k, 0) for k in BACKGROUND)
        results["variants"][name] = dict(kind=kind, what=what, ir_warm=a, ir_total=b,
                                         ir_per_request=per_req,
                                         background_per_request=background,
                                         ir_per_request_net=per_req - background)
        log(f"  {per_req:,.0f} instructions per request ({background:,.0f} of it background)")
        fa, fb = (annotate(f, inclusive=False) for f in files)
        selfs[name] = {k: (fb.get(k, 0) - fa.get(k, 0)) / args.requests
                       for k in set(fa) | set(fb)}
        if name in ("sg-split", "floor"):
            hot = ["__memcpy_avx_unaligned_erms", "malloc", "free", "realloc"]
            (ca, na), (cb, nb) = (callers(f, hot) for f in files)
            results["variants"][name]["calls_per_request"] = {
                t: round((nb[t] - na[t]) / args.requests, 2) for t in hot}
            results["functions"][f"{name}.callers"] = {
                t: top({k: (cb[t].get(k, 0) - ca[t].get(k, 0)) / args.requests
                        for k in set(ca[t]) | set(cb[t])}, 8) for t in hot}
            results["functions"][f"{name}.inclusive"] = top(incl, 40)
            results["functions"][f"{name}.self"] = top(selfs[name], 40)

    # sluicegate beyond the floor: per function and per owner, self cost.
    if "sg-split" in selfs and "floor" in selfs:
        sg, fl = selfs["sg-split"], selfs["floor"]
        diff = {k: sg.get(k, 0) - fl.get(k, 0) for k in set(sg) | set(fl)}
        results["functions"]["sg-split_minus_floor.self"] = top(diff, 30)
        gs, gf = {}, {}
        for k, v in sg.items():
            gs[group(k)] = gs.get(group(k), 0) + v
        for k, v in fl.items():
            gf[group(k)] = gf.get(group(k), 0) + v
        results["groups"] = sorted(
            ({"group": g, "sluicegate": round(gs.get(g, 0)), "floor": round(gf.get(g, 0)),
              "extra": round(gs.get(g, 0) - gf.get(g, 0))} for g in set(gs) | set(gf)),
            key=lambda r: -r["extra"])[:25]

    harness.write_json(OUT / "callgrind.json", results)
    md = render(results)
    (OUT / "callgrind.md").write_text(md)
    services.stop_all()
    shutil.rmtree(workdir, ignore_errors=True)
    print(md)


def top(d, n):
    return [dict(function=k, ir_per_request=round(v, 1))
            for k, v in sorted(d.items(), key=lambda kv: -kv[1])[:n] if abs(v) >= 0.5]


def render(results):
    v = results["variants"]
    env = results["environment"]
    lines = [f"# Instructions per request (callgrind, {results['requests']:,} keep-alive "
             f"requests after {results['warm']} warm-up)", "",
             f"{env['date']} · {env['valgrind']} · binaries built "
             f"{env.get('binaries_built', '?')} from "
             f"{env.get('binaries_commit', env['sluicegate_commit'])}"
             f"{' + uncommitted changes' if env.get('binaries_dirty_tree') else ''}", "",
             ("sluicegate metrics: on (GET /metrics 200), included in every sg-* figure"
              if results.get("metrics_status") == 200 else
              f"sluicegate metrics: GET /metrics answered {results.get('metrics_status')}: "
              "not in this build"), "",
             "net = total minus background work on a clock (sluicegate's config re-read "
             "loop), which callgrind's slow-down inflates.", "",
             "| variant | adds (over base) | base | instructions / request | background | net "
             "| net − base net | net vs floor |", "|---|---|---|---|---|---|---|---|"]
    floor = v.get("floor", {}).get("ir_per_request_net")
    for name, _kind, _opts, base, what in VARIANTS:
        if name not in v:
            continue
        x = v[name]
        step = f"{x['ir_per_request_net'] - v[base]['ir_per_request_net']:+,.0f}" \
            if base in v else ""
        vs = f"{x['ir_per_request_net'] / floor:.2f}×" if floor else "–"
        lines.append(f"| {name} | {what} | {base or ''} | {x['ir_per_request']:,.0f} | "
                     f"{x['background_per_request']:,.0f} | {x['ir_per_request_net']:,.0f} | "
                     f"{step} | {vs} |")
    calls = {k: x["calls_per_request"] for k, x in v.items() if "calls_per_request" in x}
    if calls:
        lines += ["", "Calls per request: " + "; ".join(
            f"{k}: " + ", ".join(f"{t.split('_')[2] if t.startswith('__memcpy') else t} {n}"
                                 for t, n in c.items()) for k, c in calls.items())]
    lines += ["", "Not separable by config yet:", ""]
    lines += [f"- **{k}**: {why}" for k, why in NO_KNOB]
    if "groups" in results:
        lines += ["", "## Where sluicegate (sg-split) spends instructions beyond the floor",
                  "", "Self cost per request, grouped by crate::module:", "",
                  "| owner | sluicegate | floor | extra |", "|---|---|---|---|"]
        for g in results["groups"][:15]:
            lines.append(f"| {g['group'][:90]} | {g['sluicegate']:,} | {g['floor']:,} | "
                         f"{g['extra']:+,} |")
        lines += ["", "Top functions by extra self cost per request (sluicegate − floor):", "",
                  "```"]
        for f in results["functions"].get("sg-split_minus_floor.self", [])[:20]:
            lines.append(f"{f['ir_per_request']:8,.0f}  {f['function'][:140]}")
        lines += ["```"]
    for key in ("sg-split.callers", "floor.callers"):
        if key in results["functions"]:
            lines += ["", f"## {key.split('.')[0]}: callers of memcpy / malloc / free / realloc "
                      "(instructions per request inside the callee)", "", "```"]
            for target, rows in results["functions"][key].items():
                for f in rows[:5]:
                    lines.append(f"{f['ir_per_request']:8,.0f}  {target} ← {f['function'][:120]}")
            lines += ["```"]
    for key in ("sg-split.inclusive", "floor.inclusive"):
        if key in results["functions"]:
            lines += ["", f"## {key.replace('.', ' ')} (per request, top 25)", "", "```"]
            for f in results["functions"][key][:25]:
                lines.append(f"{f['ir_per_request']:8,.0f}  {f['function'][:140]}")
            lines += ["```"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
