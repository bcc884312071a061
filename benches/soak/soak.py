"""Zero-loss soak (issue 10): steady load through a real sluicegate while the
config is reloaded every second, the weights are changed through the admin API
every second, and a backend process is killed (SIGKILL) and restarted every
20 s. Everything runs on 127.0.0.1 and stops by itself.

    python3 benches/soak/soak.py --binary target/release/sluicegate [--minutes 5]

Pass/fail: failed idempotent (GET) requests = 0, and no POST reached the
backends twice (counted in the backends' own logs, which survive SIGKILL).
POSTs that were in flight at a backend when it was killed may fail; they are
counted, never retried. RSS of the proxy is sampled every 5 s.

`soak.py backend PORT NAME LOG` is the backend process itself.
"""

import argparse
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# --------------------------------------------------------------------------
# Backend process
# --------------------------------------------------------------------------


def run_backend(port, name, log_path):
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Head and body go out in two writes: without this, Nagle and the
        # proxy's delayed ACK add 40 ms to every answer.
        disable_nagle_algorithm = True

        def log_message(self, *args):
            pass

        def answer(self, text):
            body = text.encode()
            self.send_response(200)
            self.send_header("content-length", str(len(body)))
            self.send_header("x-backend", name)
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            if self.path != "/healthz":
                os.write(log, f"GET {self.path}\n".encode())
            self.answer(name)

        def do_POST(self):
            length = int(self.headers.get("content-length", "0"))
            body = self.rfile.read(length).decode()
            # One unbuffered write per request: it survives SIGKILL.
            os.write(log, f"POST {body}\n".encode())
            self.answer(name)

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        allow_reuse_address = True

    Server(("127.0.0.1", port), Handler).serve_forever()


# --------------------------------------------------------------------------
# Load client
# --------------------------------------------------------------------------


class Load:
    """Worker threads, each on one keep-alive connection to the proxy, at a
    fixed total rate; every 5th request is a POST with a unique id."""

    def __init__(self, port, rate, workers):
        self.port = port
        self.interval = workers / rate
        self.workers = workers
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.counts = {"get_ok": 0, "get_failed": 0, "post_ok": 0, "post_failed": 0}
        self.failures = []
        self.latencies = []
        self.threads = [threading.Thread(target=self.work, args=(i,)) for i in range(workers)]

    def start(self):
        for t in self.threads:
            t.start()

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join()

    def note(self, kind, ok, detail, latency):
        with self.lock:
            self.counts[f"{kind}_{'ok' if ok else 'failed'}"] += 1
            if ok:
                self.latencies.append(latency)
            elif len(self.failures) < 20:
                self.failures.append(f"{time.strftime('%H:%M:%S')} {kind}: {detail}")

    def work(self, worker):
        conn = None
        n = 0
        next_at = time.monotonic() + worker * self.interval / self.workers
        while not self.stop.is_set():
            delay = next_at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            next_at += self.interval
            n += 1
            post = n % 5 == 0
            kind = "post" if post else "get"
            started = time.monotonic()
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                if post:
                    body = f"w{worker}-{n}"
                    conn.request("POST", "/post", body=body, headers={"host": "soak.test"})
                else:
                    conn.request("GET", f"/get?w={worker}&n={n}", headers={"host": "soak.test"})
                resp = conn.getresponse()
                resp.read()
                ok = resp.status == 200
                self.note(kind, ok, f"status {resp.status}", time.monotonic() - started)
                if resp.will_close:
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as e:
                self.note(kind, False, repr(e), 0)
                if conn is not None:
                    conn.close()
                conn = None
        if conn is not None:
            conn.close()


# --------------------------------------------------------------------------
# Orchestration
# --------------------------------------------------------------------------


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, limit=10):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port} after {limit}s")


def config_text(listen, admin, endpoints, blue_weight):
    def group(name, weight, ports):
        eps = ", ".join(f'"127.0.0.1:{p}"' for p in ports)
        return f"""
  [[routes.backends]]
  name = "{name}"
  weight = {weight}
  endpoints = [{eps}]
    [routes.backends.health]
    path = "/healthz"
    interval = "1s"
    timeout = "500ms"
    unhealthy_threshold = 1
    healthy_threshold = 1
"""

    return f"""# sluicegate soak config (written by benches/soak/soak.py)
[[listeners]]
addr = "127.0.0.1:{listen}"

[admin]
addr = "127.0.0.1:{admin}"
token_file = "admin.token"

[timeouts]
connect = "1s"
response_headers = "5s"

[[routes]]
name = "web"
{group("blue", blue_weight, endpoints["blue"])}{group("green", 100 - blue_weight, endpoints["green"])}"""


class Soak:
    def __init__(self, args):
        self.args = args
        self.dir = tempfile.mkdtemp(prefix="sluicegate-soak-")
        self.token = os.urandom(16).hex()
        with open(os.path.join(self.dir, "admin.token"), "w") as f:
            f.write(self.token + "\n")
        self.listen, self.admin = free_port(), free_port()
        self.backends = {}  # name -> (port, process)
        self.endpoints = {"blue": [], "green": []}
        for group in ("blue", "green"):
            for i in (1, 2):
                port = free_port()
                name = f"{group}{i}"
                self.endpoints[group].append(port)
                self.backends[name] = [port, None]
        self.config_path = os.path.join(self.dir, "sluicegate.toml")
        self.events = {"reloads": 0, "reload_errors": 0, "weight_changes": 0,
                       "weight_errors": 0, "kills": 0}
        self.rss = []

    def log_path(self, name):
        return os.path.join(self.dir, f"{name}.log")

    def start_backend(self, name):
        port = self.backends[name][0]
        proc = subprocess.Popen(
            [sys.executable, __file__, "backend", str(port), name, self.log_path(name)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.backends[name][1] = proc
        wait_port(port)

    def write_config(self, blue_weight):
        tmp = self.config_path + ".tmp"
        with open(tmp, "w") as f:
            f.write(config_text(self.listen, self.admin, self.endpoints, blue_weight))
        os.replace(tmp, self.config_path)

    def admin_call(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else b""
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.admin}{path}", data=data if method != "GET" else None,
            method=method, headers={"authorization": f"Bearer {self.token}",
                                    "content-type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()
        except OSError as e:
            return 0, repr(e).encode()

    def rss_kib(self):
        try:
            with open(f"/proc/{self.proxy.pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1])
        except OSError:
            return 0
        return 0

    def run(self):
        for name in self.backends:
            self.start_backend(name)
        self.write_config(50)
        self.proxy = subprocess.Popen(
            [self.args.binary, "run", "-c", self.config_path], cwd=self.dir,
            stdout=open(os.path.join(self.dir, "proxy.log"), "w"), stderr=subprocess.STDOUT,
            env={**os.environ, "RUST_LOG": "warn"})
        wait_port(self.listen)
        wait_port(self.admin)
        time.sleep(1.5)  # first health checks
        load = Load(self.listen, self.args.rate, self.args.workers)
        started = time.monotonic()
        end = started + self.args.minutes * 60
        load.start()
        kill_order = list(self.backends)
        tick = 0
        killed = None
        try:
            while time.monotonic() < end:
                tick += 1
                # A real reload every second: the file's weights alternate.
                self.write_config(50 if tick % 2 else 60)
                status, body = self.admin_call("POST", "/api/v1/reload")
                self.events["reloads" if status == 200 else "reload_errors"] += 1
                time.sleep(0.5)
                # A weight change every second, half a second later.
                blue = 30 if tick % 2 else 70
                status, body = self.admin_call(
                    "PUT", "/api/v1/routes/web/weights",
                    {"weights": {"blue": blue, "green": 100 - blue}, "reason": "soak"})
                self.events["weight_changes" if status == 200 else "weight_errors"] += 1
                # A backend killed every 20 s and started again 2 s later.
                if tick % 20 == 0:
                    killed = kill_order[(tick // 20 - 1) % len(kill_order)]
                    self.backends[killed][1].send_signal(signal.SIGKILL)
                    self.backends[killed][1].wait()
                    self.events["kills"] += 1
                elif tick % 20 == 2 and killed is not None:
                    self.start_backend(killed)
                    killed = None
                if tick % 5 == 0:
                    self.rss.append((round(time.monotonic() - started), self.rss_kib()))
                time.sleep(0.5)
        finally:
            load.finish()
            if killed is not None:
                self.start_backend(killed)
        _, metrics = self.admin_call("GET", "/metrics")
        self.stop()
        return self.report(load, time.monotonic() - started, metrics.decode(errors="replace"))

    def stop(self):
        self.proxy.send_signal(signal.SIGTERM)
        try:
            self.proxy.wait(timeout=40)
        except subprocess.TimeoutExpired:
            self.proxy.kill()
        for _, proc in self.backends.values():
            if proc is not None:
                proc.kill()
                proc.wait()

    def report(self, load, seconds, metrics):
        posts = {}
        gets_seen = 0
        for name in self.backends:
            with open(self.log_path(name)) as f:
                for line in f:
                    kind, _, value = line.strip().partition(" ")
                    if kind == "POST":
                        posts[value] = posts.get(value, 0) + 1
                    elif kind == "GET":
                        gets_seen += 1
        duplicates = {k: v for k, v in posts.items() if v > 1}
        lat = sorted(load.latencies)

        def pct(p):
            return round(lat[min(len(lat) - 1, int(len(lat) * p))] * 1000, 2) if lat else None

        warm = [kib for t, kib in self.rss if t >= 30] or [kib for _, kib in self.rss]
        reload_lines = [l for l in metrics.splitlines()
                        if l.startswith("sluicegate_config_reloads_total")
                        or l.startswith("sluicegate_config_revision")
                        or l.startswith("sluicegate_upstream_retries_total")
                        or l.startswith("sluicegate_failovers_total")]
        c = load.counts
        result = {
            "minutes": self.args.minutes,
            "seconds": round(seconds, 1),
            "rate_target": self.args.rate,
            "requests": sum(c.values()),
            "get_ok": c["get_ok"], "get_failed": c["get_failed"],
            "post_ok": c["post_ok"], "post_failed": c["post_failed"],
            "posts_at_backends": len(posts),
            "posts_duplicated": len(duplicates),
            "gets_at_backends": gets_seen,
            "latency_ms": {"p50": pct(0.5), "p99": pct(0.99), "max": pct(1.0)},
            "events": self.events,
            "rss_kib_samples": self.rss,
            "rss_kib_after_warmup": {"first": warm[0] if warm else None,
                                     "last": warm[-1] if warm else None,
                                     "max": max(warm) if warm else None},
            "failures": load.failures,
            "metrics": reload_lines,
            "pass": c["get_failed"] == 0 and not duplicates,
        }
        return result


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "backend":
        run_backend(int(sys.argv[2]), sys.argv[3], sys.argv[4])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--binary", default="target/release/sluicegate")
    parser.add_argument("--minutes", type=float, default=5)
    parser.add_argument("--rate", type=float, default=200, help="requests per second in all")
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--out", default="target/soak/results.json")
    args = parser.parse_args()
    args.binary = os.path.abspath(args.binary)
    soak = Soak(args)
    print(f"soak: {args.minutes} min at {args.rate} req/s in {soak.dir}", flush=True)
    result = soak.run()
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    summary = {k: v for k, v in result.items() if k not in ("rss_kib_samples", "metrics")}
    print(json.dumps(summary, indent=2))
    print("\n".join(result["metrics"]))
    print(f"results: {args.out}")
    print("PASS" if result["pass"] else "FAIL")
    sys.exit(0 if result["pass"] else 1)


if __name__ == "__main__":
    main()
