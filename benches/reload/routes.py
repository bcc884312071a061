#!/usr/bin/env python3
"""Reload and weight-change cost by number of routes (not a test).

    cargo build --release
    python3 benches/reload/routes.py [--binary target/release/sluicegate] [--routes 1,1000,10000]

For each route count N, one sluicegate (release build) serves N host-matched
routes over two tiny origins (blue, green) that answer with their name. The
route measured is the last one in the file (the worst case for anything that
walks the routes). Two measurements, each `--changes` times:

* file: the config file is rewritten (atomic rename) with that route's
  weights flipped; the time is from the rename until the next request to the
  route answers from the new colour (the proxy's file watcher picks it up);
* admin: `PUT /api/v1/routes/{route}/weights` flips the weights; the time the
  admin API takes to answer, and until the next request follows.

Meanwhile a second client sends requests to the first route on a kept-alive
connection and records each latency: p99 while changes are in flight against
p99 at rest, and every failed request. Results print as a Markdown table.
"""

import argparse
import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from benchlib import free_port, origin  # noqa: E402


def config_text(routes, data, admin, blue, green, last_colour):
    out = [f"""[[listeners]]
addr = "127.0.0.1:{data}"
[admin]
addr = "127.0.0.1:{admin}"
token_file = "token"
"""]
    for i in range(routes):
        green_weight = 100 if (i == routes - 1 and last_colour == "green") else 0
        out.append(f"""[[routes]]
name = "r{i}"
match = {{ host = "r{i}.bench" }}
  [[routes.backends]]
  name = "blue"
  weight = {100 - green_weight}
  endpoints = ["127.0.0.1:{blue}"]
  [[routes.backends]]
  name = "green"
  weight = {green_weight}
  endpoints = ["127.0.0.1:{green}"]
""")
    return "".join(out)


def percentile(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * q))] if values else float("nan")


class Load(threading.Thread):
    """Sequential keep-alive requests to route r0, each timed."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.port, self.samples, self.failed, self.stop = port, [], 0, False

    def run(self):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        while not self.stop:
            started = time.perf_counter()
            try:
                conn.request("GET", "/", headers={"Host": "r0.bench"})
                reply = conn.getresponse()
                reply.read()
                ok = reply.status == 200
            except OSError:
                ok = False
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            ended = time.perf_counter()
            if ok:
                self.samples.append((started, ended))
            else:
                self.failed += 1


def follows(conn, host, colour, started, limit=30.0):
    while True:
        conn.request("GET", "/", headers={"Host": host})
        reply = conn.getresponse()
        reply.read()
        if reply.getheader("X-Backend") == colour:
            return (time.perf_counter() - started) * 1000
        if time.perf_counter() - started > limit:
            sys.exit(f"{host} never answered from {colour}")


def run(binary, routes, changes):
    tmp = tempfile.mkdtemp(prefix="sg-reload-bench-")
    proc = None
    try:
        blue, green = origin("blue"), origin("green")
        data, admin = free_port(), free_port()
        with open(os.path.join(tmp, "token"), "w") as f:
            f.write("bench-token\n")
        path = os.path.join(tmp, "sluicegate.toml")
        with open(path, "w") as f:
            f.write(config_text(routes, data, admin, blue, green, "blue"))
        started = time.perf_counter()
        proc = subprocess.Popen([binary, "run", "-c", path], cwd=tmp,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        conn = None
        while conn is None:
            try:
                c = http.client.HTTPConnection("127.0.0.1", data, timeout=5)
                c.request("GET", "/", headers={"Host": "r0.bench"})
                c.getresponse().read()
                conn = c
            except OSError:
                if time.perf_counter() - started > 120:
                    sys.exit("sluicegate did not start")
                time.sleep(0.02)
        startup = (time.perf_counter() - started) * 1000
        last = f"r{routes - 1}"
        host = f"{last}.bench"
        load = Load(data)
        load.start()
        time.sleep(2)
        windows, file_times, admin_answer, admin_times = [], [], [], []
        for i in range(changes):
            colour = "green" if i % 2 == 0 else "blue"
            text = config_text(routes, data, admin, blue, green, colour)
            with open(path + ".new", "w") as f:
                f.write(text)
            t0 = time.perf_counter()
            os.rename(path + ".new", path)
            file_times.append(follows(conn, host, colour, t0))
            windows.append((t0, time.perf_counter()))
            time.sleep(0.3)
        admin_conn = http.client.HTTPConnection("127.0.0.1", admin, timeout=30)
        for i in range(changes):
            colour = "green" if i % 2 == 0 else "blue"
            other = "blue" if colour == "green" else "green"
            body = json.dumps({"weights": {colour: 100, other: 0}})
            t0 = time.perf_counter()
            admin_conn.request("PUT", f"/api/v1/routes/{last}/weights", body=body,
                               headers={"Authorization": "Bearer bench-token",
                                        "Content-Type": "application/json"})
            answer = admin_conn.getresponse()
            answer.read()
            if answer.status != 200:
                sys.exit(f"PUT answered {answer.status}")
            admin_answer.append((time.perf_counter() - t0) * 1000)
            admin_times.append(follows(conn, host, colour, t0))
            windows.append((t0, time.perf_counter()))
            time.sleep(0.1)
        time.sleep(1)
        load.stop = True
        load.join()

        def during(sample):
            s, e = sample
            return any(s < we and e > ws for ws, we in windows)

        busy = [(e - s) * 1000 for s, e in load.samples if during((s, e))]
        rest = [(e - s) * 1000 for s, e in load.samples if not during((s, e))]
        return {
            "routes": routes,
            "startup_ms": startup,
            "file_p50": statistics.median(file_times),
            "file_max": max(file_times),
            "admin_answer_p50": statistics.median(admin_answer),
            "admin_answer_max": max(admin_answer),
            "admin_follow_p50": statistics.median(admin_times),
            "p99_rest": percentile(rest, 0.99),
            "p99_busy": percentile(busy, 0.99),
            "requests": len(load.samples),
            "failed": load.failed,
        }
    finally:
        if proc is not None:
            proc.kill()
            proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--binary", default="target/release/sluicegate")
    parser.add_argument("--routes", default="1,1000,10000")
    parser.add_argument("--changes", type=int, default=10)
    args = parser.parse_args()
    rows = [run(args.binary, int(n), args.changes) for n in args.routes.split(",")]
    print("| routes | start-up ms | file → effective p50 (max) ms | admin answer p50 (max) ms "
          "| admin → effective p50 ms | load p99 at rest / during ms | requests | failed |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['routes']:,} | {r['startup_ms']:.0f} | {r['file_p50']:.1f} ({r['file_max']:.1f}) "
              f"| {r['admin_answer_p50']:.2f} ({r['admin_answer_max']:.2f}) "
              f"| {r['admin_follow_p50']:.2f} | {r['p99_rest']:.2f} / {r['p99_busy']:.2f} "
              f"| {r['requests']:,} | {r['failed']} |")


if __name__ == "__main__":
    main()
