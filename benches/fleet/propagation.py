#!/usr/bin/env python3
"""Fleet propagation benchmark (not a test): how long a weight change made on
one sluicegate instance takes to steer the next request on another instance
of the same fleet, over 1 and 3 etcd members; and how many etcd writes each
instance makes per second at rest (registration, lease renewals).

    cargo build --release
    python3 benches/fleet/propagation.py [--binary target/release/sluicegate] [--changes 100]

Everything runs on loopback ports picked free first: etcd members (Debian's
`etcd`), two sluicegate instances A and B, and two tiny origins (blue, green)
that answer with their name. Each change sets 100 % on one colour through A's
admin API; the time is from sending the PUT until B's next request answers
from that colour (B is polled on a kept-alive connection).
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
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from benchlib import free_port, origin  # noqa: E402


def start_etcd(size, tmp):
    members = [(f"m{i}", free_port(), free_port()) for i in range(size)]
    cluster = ",".join(f"{n}=http://127.0.0.1:{p}" for n, _, p in members)
    procs = []
    for name, client, peer in members:
        procs.append(subprocess.Popen([
            "etcd", "--name", name, "--data-dir", os.path.join(tmp, name),
            f"--listen-client-urls=http://127.0.0.1:{client}",
            f"--advertise-client-urls=http://127.0.0.1:{client}",
            f"--listen-peer-urls=http://127.0.0.1:{peer}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
            f"--initial-cluster={cluster}", "--initial-cluster-state=new",
        ], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    urls = [f"http://127.0.0.1:{c}" for _, c, _ in members]
    deadline = time.time() + 30
    for _, client, _ in members:
        while True:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", client, timeout=1)
                conn.request("GET", "/health")
                if b'"true"' in conn.getresponse().read():
                    break
            except OSError:
                pass
            if time.time() > deadline:
                sys.exit("etcd did not become healthy")
            time.sleep(0.05)
    return procs, urls


def etcd_revision(url):
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=2)
    conn.request("POST", "/v3/kv/range", body=json.dumps({"key": "AA=="}))
    return int(json.loads(conn.getresponse().read())["header"]["revision"])


def start_instance(binary, tmp, name, urls, prefix, blue, green):
    data, admin = free_port(), free_port()
    folder = os.path.join(tmp, name)
    os.makedirs(folder)
    with open(os.path.join(folder, "token"), "w") as f:
        f.write("bench-token\n")
    etcd = ", ".join(f'"{u}"' for u in urls)
    config = f"""
[[listeners]]
addr = "127.0.0.1:{data}"
[admin]
addr = "127.0.0.1:{admin}"
token_file = "token"
state_file = "state.json"
[fleet]
etcd = [{etcd}]
prefix = "{prefix}"
instance = "{name}"
[[routes]]
name = "web"
  [[routes.backends]]
  name = "blue"
  weight = 100
  endpoints = ["127.0.0.1:{blue}"]
  [[routes.backends]]
  name = "green"
  weight = 0
  endpoints = ["127.0.0.1:{green}"]
"""
    path = os.path.join(folder, "sluicegate.toml")
    with open(path, "w") as f:
        f.write(config)
    proc = subprocess.Popen([binary, "run", "-c", path], cwd=folder,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 20
    while True:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", admin, timeout=1)
            conn.request("GET", "/api/v1/routes")
            if json.loads(conn.getresponse().read()).get("fleet", {}).get("connected"):
                break
        except (OSError, ValueError):
            pass
        if time.time() > deadline:
            sys.exit(f"instance {name} did not connect to etcd")
        time.sleep(0.05)
    return proc, data, admin


def run(binary, size, changes):
    tmp = tempfile.mkdtemp(prefix="sg-fleet-bench-")
    procs = []
    try:
        etcd, urls = start_etcd(size, tmp)
        procs += etcd
        blue, green = origin("blue"), origin("green")
        prefix = f"/bench/{size}-{os.getpid()}"
        a, _, a_admin = start_instance(binary, tmp, "a", urls, prefix, blue, green)
        b, b_data, _ = start_instance(binary, tmp, "b", urls, prefix, blue, green)
        procs += [a, b]
        admin = http.client.HTTPConnection("127.0.0.1", a_admin, timeout=5)
        data = http.client.HTTPConnection("127.0.0.1", b_data, timeout=5)
        times, answered = [], []
        for i in range(changes):
            colour = "green" if i % 2 == 0 else "blue"
            other = "blue" if colour == "green" else "green"
            body = json.dumps({"weights": {colour: 100, other: 0}})
            started = time.perf_counter()
            admin.request("PUT", "/api/v1/routes/web/weights", body=body,
                          headers={"Authorization": "Bearer bench-token",
                                   "Content-Type": "application/json"})
            answer = admin.getresponse()
            answer.read()
            if answer.status != 200:
                sys.exit(f"PUT answered {answer.status}")
            answered.append((time.perf_counter() - started) * 1000)
            while True:
                data.request("GET", "/", headers={"Host": "bench"})
                reply = data.getresponse()
                reply.read()
                if reply.getheader("X-Backend") == colour:
                    break
                if time.perf_counter() - started > 5:
                    sys.exit(f"change {i} never reached B")
            times.append((time.perf_counter() - started) * 1000)
        times.sort()
        p50 = statistics.median(times)
        p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
        put_p50 = statistics.median(answered)
        # At rest: etcd revisions per second per instance over 20 s.
        before = etcd_revision(urls[0])
        time.sleep(20)
        rate = (etcd_revision(urls[0]) - before) / 20 / 2
        return p50, p99, max(times), put_p50, rate
    finally:
        for p in procs:
            p.kill()
            p.wait()
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--binary", default="target/release/sluicegate")
    parser.add_argument("--changes", type=int, default=100)
    args = parser.parse_args()
    args.binary = os.path.abspath(args.binary)
    print("| etcd members | changes | p50 ms | p99 ms | max ms | of which the write's answer on A, p50 ms | etcd writes/s per idle instance |")
    print("|---|---|---|---|---|---|---|")
    for size in (1, 3):
        p50, p99, worst, put_p50, rate = run(args.binary, size, args.changes)
        print(f"| {size} | {args.changes} | {p50:.1f} | {p99:.1f} | {worst:.1f} | {put_p50:.1f} | {rate:.2f} |")


if __name__ == "__main__":
    main()
