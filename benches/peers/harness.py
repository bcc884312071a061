"""Shared pieces of the peer benchmark: ports, processes, /proc readers and the
configuration of every server (origins, nginx, HAProxy, sluicegate, floor).

Used by peers.py (the load benchmark) and callgrind.py (instructions per
request). Everything binds 127.0.0.1 on ports from a free-port probe, and every
process started here is stopped by `Services.stop_all()` (also at exit).
"""

import atexit
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "target" / "peers"
# run.sh and callgrind.sh copy the fresh release builds here, so a rebuild by
# someone else during a run cannot swap the binary under the benchmark.
SLUICEGATE = Path(os.environ.get("SLUICEGATE_BIN", OUT / "bin" / "sluicegate"))
FLOOR = Path(os.environ.get("FLOOR_BIN", OUT / "bin" / "sluicegate-floor"))
HERE = Path(__file__).resolve().parent

PROXY_CPU = 0  # the proxy under test
LOAD_CPU = 1  # load generator and origins

# Every request of the benchmark carries this Host: the 1,000-route config
# routes it with its last route.
TARGET_HOST = "target.bench.example"
SMALL_BODY = "hello from the origin\n"
LARGE_BODY_BYTES = 64 * 1024

CLK_TCK = os.sysconf("SC_CLK_TCK")

# Niceness of everything the benchmark starts (proxies, origins, load tools).
# Other engineers compile on this machine: at -19 the benchmark's processes
# get ~98 % of a core they share with a nice-0 compiler instead of ~50 %.
# 0 turns it off. Set by peers.py --nice; callgrind.py does not need it.
NICE = int(os.environ.get("SLUICEGATE_BENCH_NICE", "-19"))


def prioritize():
    """Gives this process's scheduler autogroup (kernel.sched_autogroup_enabled:
    one group per session, fair shares between groups, so plain nice only
    ranks processes inside a group) the benchmark's niceness. Everything the
    benchmark starts stays in this session, hence in this group. Returns what
    was done, for the results file."""
    if not NICE:
        return "off"
    try:
        with open("/proc/self/autogroup", "w") as f:
            f.write(str(NICE))
        with open("/proc/self/autogroup") as f:
            return f"nice {NICE}, autogroup: {f.read().strip()}"
    except OSError as e:
        return f"nice {NICE}, autogroup not set: {e}"


def pinned(cpu, argv):
    """argv run on one core, at the benchmark's niceness."""
    prefix = ["taskset", "-c", str(cpu)]
    if NICE:
        prefix = ["nice", "-n", str(NICE)] + prefix
    return prefix + [str(a) for a in argv]
_handed_out = set()


def free_port():
    """A port the kernel says is free now, never one handed out before."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def raise_nofile():
    """Soft open-file limit up to the hard one (10,000 idle connections)."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def listening(port):
    """True once something listens on 127.0.0.1:port (read from /proc, so the
    check itself sends nothing: callgrind counts stay deterministic)."""
    want = f"0100007F:{port:04X}"
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                for line in f.readlines()[1:]:
                    fields = line.split()
                    if fields[1] == want and fields[3] == "0A":
                        return True
        except FileNotFoundError:
            pass
    return False


def wait_listening(port, timeout=60.0, proc=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if listening(port):
            return
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port} after {timeout}s")


def http_get(port, path="/", host=TARGET_HOST, timeout=5.0):
    """(status, body) of one GET; status 0 when the connection failed."""
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={"Host": host})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except OSError:
        return 0, b""


def wait_http_ok(port, path="/", timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, _ = http_get(port, path)
        if status == 200:
            return
        time.sleep(0.1)
    raise RuntimeError(f"no 200 from 127.0.0.1:{port}{path} after {timeout}s")


# ----------------------------------------------------------------------- TLS


def make_cert(workdir):
    """A self-signed ECDSA P-256 certificate for TARGET_HOST (SAN: the name and
    127.0.0.1), made once per run in `workdir`; every TLS listener serves it.
    Returns {"cert": path, "key": path, "pem": cert + key in one file (HAProxy)}."""
    if shutil.which("openssl") is None:
        raise SystemExit("openssl not found: the TLS cases need it to make their "
                         "certificate (Debian package openssl), or leave them out with --cases")
    d = Path(workdir) / "tls"
    d.mkdir(parents=True, exist_ok=True)
    cert, key = d / "cert.pem", d / "key.pem"
    out = subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-keyout", key, "-out", cert, "-days", "30", "-subj", f"/CN={TARGET_HOST}",
         "-addext", f"subjectAltName=DNS:{TARGET_HOST},IP:127.0.0.1"],
        capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"openssl req failed:\n{out.stderr}")
    pem = d / "cert-key.pem"
    pem.write_text(cert.read_text() + key.read_text())
    return {"cert": cert, "key": key, "pem": pem}


def build_tls_shim(workdir):
    """Compiles wrk_tls_shim.c (wrk's LD_PRELOAD shim: full or resumed
    handshakes on reconnect, and a count of each) into `workdir`."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise SystemExit("no C compiler (cc/gcc) for wrk_tls_shim.c: the TLS cases need it "
                         "(Debian package gcc), or leave them out with --cases")
    so = Path(workdir) / "wrk_tls_shim.so"
    out = subprocess.run([cc, "-O2", "-shared", "-fPIC", "-o", so, HERE / "wrk_tls_shim.c",
                          "-ldl"], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"building wrk_tls_shim.so failed:\n{out.stderr}")
    return so


# --------------------------------------------------------------------- /proc


def descendants(pid):
    """pid and every process below it (nginx master + worker)."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def cpu_ticks(pids):
    """(utime, stime) in clock ticks, summed over pids (all threads of each)."""
    user = system = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        user += int(fields[11])
        system += int(fields[12])
    return user, system


def status_kb(pids, key):
    """Sum of a /proc/PID/status field (VmRSS, VmHWM) in kB."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith(key + ":"):
                        total += int(line.split()[1])
        except OSError:
            continue
    return total


def core_busy_ticks(cpu):
    """(busy, total) ticks of one core from /proc/stat."""
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith(f"cpu{cpu} "):
                v = [int(x) for x in line.split()[1:]]
                idle = v[3] + v[4]
                return sum(v) - idle, sum(v)
    return 0, 0


# ----------------------------------------------------------------- processes


class Service:
    """One started program, pinned to a core, in its own process group."""

    def __init__(self, name, argv, cpu, cwd, env=None, stdin=subprocess.DEVNULL):
        self.name = name
        self.log_path = Path(cwd) / f"{name}.log"
        self.log = open(self.log_path, "wb")
        full_env = dict(os.environ)
        full_env.update(env or {})
        argv = pinned(cpu, argv) if cpu is not None else [str(a) for a in argv]
        self.proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env=full_env,
            stdin=stdin,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            preexec_fn=raise_nofile,
            # Own process group (to stop it and what it forks) but the same
            # session, so the same scheduler autogroup (see prioritize()).
            process_group=0,
        )

    @property
    def pid(self):
        return self.proc.pid

    def pids(self):
        return descendants(self.proc.pid)

    def alive(self):
        return self.proc.poll() is None

    def stop(self, sig=signal.SIGTERM, grace=15.0):
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(sig)
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                # Its own process group (process_group=0): the program and
                # whatever it forked, nothing else.
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait()
        self.log.close()

    def tail(self, n=20):
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


class Services:
    """Every Service started, stopped in reverse order (also at exit)."""

    def __init__(self):
        self.started = []
        atexit.register(self.stop_all)
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum, _frame):
        self.stop_all()
        raise SystemExit(128 + signum)

    def start(self, *args, **kwargs):
        service = Service(*args, **kwargs)
        self.started.append(service)
        return service

    def stop(self, service, **kwargs):
        service.stop(**kwargs)
        if service in self.started:
            self.started.remove(service)

    def stop_all(self):
        while self.started:
            self.started.pop().stop(grace=5.0)


# ------------------------------------------------------------------- origins


def nginx_temp_paths(d):
    return "\n".join(
        f"  {k}_temp_path {d}/{k};" for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )


def origin_conf(d, port):
    """One origin: a small `return 200` body at /, 64 KiB from a file at /64k."""
    return f"""
worker_processes 1;
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
worker_rlimit_nofile 20000;
events {{ worker_connections 8192; }}
http {{
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 100000000;
  keepalive_timeout 600s;
{nginx_temp_paths(d)}
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    default_type text/plain;
    location = /64k {{ alias {d}/64k.bin; }}
    location / {{ return 200 "{SMALL_BODY.strip()}\\n"; }}
  }}
}}
"""


class Origins:
    """Two nginx origins on the load core: A takes 90 %, B 10 %."""

    def __init__(self, services, workdir):
        self.ports = []
        self.services = []
        for name in ("origin-a", "origin-b"):
            d = Path(workdir) / name
            d.mkdir(parents=True, exist_ok=True)
            (d / "64k.bin").write_bytes(b"x" * LARGE_BODY_BYTES)
            port = free_port()
            (d / "nginx.conf").write_text(origin_conf(d, port))
            svc = services.start(
                name, ["nginx", "-p", d, "-c", d / "nginx.conf", "-e", d / "error.log"], LOAD_CPU, d
            )
            self.ports.append(port)
            self.services.append(svc)
        for port, svc in zip(self.ports, self.services):
            wait_listening(port, proc=svc.proc)
            wait_http_ok(port)
            status, body = http_get(port, "/64k")
            if status != 200 or len(body) != LARGE_BODY_BYTES:
                raise RuntimeError(f"origin {port}: /64k gave {status}, {len(body)} bytes")

    @property
    def addrs(self):
        return [f"127.0.0.1:{p}" for p in self.ports]


# ------------------------------------------------------------------- proxies


NGINX_LOCATION = """
    location / {
      proxy_pass http://origins;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $http_host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header X-Forwarded-Host $http_host;
      # 64 KiB fits in memory: no temp files
      proxy_buffer_size 16k;
      proxy_buffers 8 16k;
      proxy_busy_buffers_size 32k;
      proxy_max_temp_file_size 0;
    }"""


def nginx_proxy_conf(d, port, h2_port, origins, tls_port=None, tls=None):
    a, b = origins
    tls_server = ""
    if tls_port:
        # TLS 1.3 only, default ciphers and groups, HTTP/1.1 (no http2: ALPN
        # offers http/1.1 only); session cache and tickets on (the usual setup).
        tls_server = f"""
  server {{
    listen 127.0.0.1:{tls_port} ssl backlog=4096;
    ssl_certificate {tls['cert']};
    ssl_certificate_key {tls['key']};
    ssl_protocols TLSv1.3;
    ssl_session_cache shared:SSL:10m;
    ssl_session_tickets on;{NGINX_LOCATION}
  }}"""
    return f"""
worker_processes 1;
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
worker_rlimit_nofile 20000;
events {{ worker_connections 16000; }}
http {{
  access_log off;
  keepalive_requests 100000000;
  keepalive_timeout 600s;
{nginx_temp_paths(d)}
  upstream origins {{
    server {a} weight=9;
    server {b} weight=1;
    keepalive 256;
    keepalive_requests 100000000;
    keepalive_timeout 600s;
  }}
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    listen 127.0.0.1:{h2_port} http2 backlog=4096;{NGINX_LOCATION}
  }}{tls_server}
}}
"""


def haproxy_conf(d, port, h2_port, origins, tls_port=None, tls=None):
    a, b = origins
    tls_frontend = ""
    if tls_port:
        # Its own frontend, so the plain one stays as it was. TLS 1.3 only,
        # default ciphers and groups, ALPN http/1.1; tickets and the session
        # cache (tune.ssl.cachesize) at their defaults.
        tls_frontend = f"""
frontend fe_tls
  bind 127.0.0.1:{tls_port} ssl crt {tls['pem']} ssl-min-ver TLSv1.3 alpn http/1.1 backlog 4096
  option forwardfor
  http-request set-header X-Forwarded-Proto https
  http-request set-header X-Forwarded-Host %[req.hdr(host)]
  default_backend origins
"""
    return f"""
global
  nbthread 1
  maxconn 10400
  # 10,400 connections would want 20,815 fds for front + back sides; the hard
  # limit here is 20,000, enough since only ~100 upstream connections open.
  no strict-limits
  pidfile {d}/haproxy.pid

defaults
  mode http
  timeout connect 2s
  timeout client 600s
  timeout server 30s
  timeout http-request 10s
  timeout http-keep-alive 600s

frontend fe
  bind 127.0.0.1:{port} backlog 4096
  bind 127.0.0.1:{h2_port} proto h2 backlog 4096
  option forwardfor
  http-request set-header X-Forwarded-Proto http
  http-request set-header X-Forwarded-Host %[req.hdr(host)]
  default_backend origins

backend origins
  balance roundrobin
  http-reuse always
  server a {a} weight 9
  server b {b} weight 1
{tls_frontend}"""


def sluicegate_conf(port, admin_port, origins, routes=1, split=True, retries=None,
                    failover=None, sticky_header=None, extra="", tls_port=None, tls=None):
    """The sluicegate config; `routes` > 1 puts `routes - 1` other routes
    (distinct hosts, every tenth a wildcard) before the one that matches."""
    a, b = origins
    lines = [
        "[[listeners]]",
        f'addr = "127.0.0.1:{port}"',
        "",
    ]
    if tls_port:
        # rustls defaults (TLS 1.2 and 1.3, ALPN h2 and http/1.1, its session
        # cache): the listener has no switches for them. wrk offers no ALPN
        # and negotiates TLS 1.3, so the cases see TLS 1.3 + HTTP/1.1 here too.
        lines += ["[[listeners]]", f'addr = "127.0.0.1:{tls_port}"',
                  f'tls = {{ cert = "{tls["cert"]}", key = "{tls["key"]}" }}', ""]
    lines += [
        "[admin]",
        f'addr = "127.0.0.1:{admin_port}"',
        "",
        "[timeouts]",
        'client_idle = "600s"',
        'shutdown_grace = "2s"',
        "",
    ]

    def route(name, host):
        out = ["[[routes]]", f'name = "{name}"']
        if host:
            out.append(f'match = {{ host = "{host}" }}')
        if retries is not None:
            out.append(f"retries = {retries}")
        if failover is not None:
            out.append(f"failover = {'true' if failover else 'false'}")
        if sticky_header:
            out.append(f'sticky = {{ header = "{sticky_header}" }}')
        if split:
            out += ["  [[routes.backends]]", '  name = "blue"', "  weight = 90",
                    f'  endpoints = ["{a}"]',
                    "  [[routes.backends]]", '  name = "green"', "  weight = 10",
                    f'  endpoints = ["{b}"]']
        else:
            out += ["  [[routes.backends]]", '  name = "blue"', f'  endpoints = ["{a}"]']
        return out + [""]

    for i in range(routes - 1):
        host = f"*.w{i}.bench.example" if i % 10 == 9 else f"r{i}.bench.example"
        lines += route(f"r{i}", host)
    lines += route("target", TARGET_HOST if routes > 1 else None)
    return "\n".join(lines) + "\n" + extra


class Proxy:
    """A proxy under test, started in its own directory on the proxy core.

    kinds: nginx, haproxy, sluicegate, floor. `port` takes HTTP/1.1 (and h2c
    prior knowledge for sluicegate and the floor); `h2_port` takes h2c.
    With `tls` (make_cert's paths) nginx, HAProxy and sluicegate also listen
    on `tls_port`: HTTPS (HTTP/1.1 over TLS 1.3). The floor has no TLS:
    `tls_port` stays None.
    """

    TLS_KINDS = ("nginx", "haproxy", "sluicegate")

    def __init__(self, services, name, kind, origins, workdir, routes=1, valgrind=None,
                 floor_flags=("--xff", "--auto"), sluicegate_opts=None, cpu=PROXY_CPU,
                 tls=None):
        self.name, self.kind = name, kind
        self.services = services
        self.dir = Path(workdir) / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.h2_port = self.port
        self.admin_port = None
        self.tls_port = free_port() if tls and kind in self.TLS_KINDS else None
        t = dict(tls_port=self.tls_port, tls=tls)
        d = self.dir
        if kind == "nginx":
            self.h2_port = free_port()
            (d / "nginx.conf").write_text(nginx_proxy_conf(d, self.port, self.h2_port, origins,
                                                           **t))
            argv = ["nginx", "-p", d, "-c", d / "nginx.conf", "-e", d / "error.log"]
        elif kind == "haproxy":
            self.h2_port = free_port()
            (d / "haproxy.cfg").write_text(haproxy_conf(d, self.port, self.h2_port, origins, **t))
            argv = ["haproxy", "-db", "-f", d / "haproxy.cfg"]
        elif kind == "sluicegate":
            self.admin_port = free_port()
            conf = sluicegate_conf(self.port, self.admin_port, origins, routes=routes,
                                   **t, **(sluicegate_opts or {}))
            (d / "sluicegate.toml").write_text(conf)
            argv = [SLUICEGATE, "run", "-c", d / "sluicegate.toml"]
        elif kind == "floor":
            argv = [FLOOR, f"127.0.0.1:{self.port}", *origins, *floor_flags]
        else:
            raise ValueError(kind)
        if valgrind:
            argv = list(valgrind) + argv
        env = {"RUST_LOG": "warn"}
        self.svc = services.start(name, argv, cpu, d, env=env)
        timeout = 120 if valgrind else 30
        wait_listening(self.port, timeout=timeout, proc=self.svc.proc)
        if self.h2_port != self.port:
            wait_listening(self.h2_port, timeout=timeout, proc=self.svc.proc)
        if self.tls_port:
            wait_listening(self.tls_port, timeout=timeout, proc=self.svc.proc)

    def pids(self):
        return self.svc.pids()

    def stop(self):
        # nginx: SIGTERM is a fast shutdown; HAProxy: SIGTERM too (SIGUSR1 is soft).
        self.services.stop(self.svc, sig=signal.SIGINT if self.kind == "nginx" else signal.SIGTERM)

    def metrics_status(self):
        """HTTP status of sluicegate's GET /metrics (404 until metrics land)."""
        if self.admin_port is None:
            return None
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}/metrics",
                                        timeout=5) as resp:
                return resp.status
        except urllib.error.HTTPError as e:
            return e.code
        except OSError:
            return 0


# ------------------------------------------------------------------ versions


def command_output(argv):
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        return (out.stdout + out.stderr).strip()
    except (OSError, subprocess.TimeoutExpired):
        return "not found"


def environment():
    """Machine, versions and date, for the results file and the docs."""
    def first_line(argv):
        text = command_output(argv)
        return text.splitlines()[0] if text else ""

    cpu_model = ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    build = {}
    try:
        for line in (SLUICEGATE.parent / "BUILD_INFO").read_text().splitlines():
            key, _, value = line.partition("=")
            build[key] = value
    except OSError:
        pass
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "binaries_built": build.get("built", "unknown"),
        "binaries_commit": build.get("commit", "unknown"),
        "binaries_dirty_tree": build.get("dirty") == "yes",
        "kernel": os.uname().release,
        "cpu": cpu_model,
        "cores": os.cpu_count(),
        "os": first_line(["sh", "-c", ". /etc/os-release && echo $PRETTY_NAME"]),
        "sluicegate_commit": first_line(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"]),
        "sluicegate_dirty": bool(command_output(["git", "-C", str(ROOT), "status", "--porcelain",
                                                 "--", "src", "Cargo.toml"])),
        "rustc": first_line(["rustc", "--version"]),
        "nginx": first_line(["nginx", "-v"]),
        "haproxy": first_line(["haproxy", "-v"]),
        "wrk": first_line(["wrk", "-v"]),
        "h2load": first_line(["h2load", "--version"]),
        "openssl": first_line(["openssl", "version"]),
        "valgrind": first_line(["valgrind", "--version"]),
        "python": first_line(["python3", "--version"]),
    }


def write_json(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
