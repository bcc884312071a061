#!/usr/bin/env bash
# 10,000 idle keep-alive client connections (issue 10, resource exhaustion):
# each makes one GET, then sits idle. Reports the proxy's RSS and fd count
# before, with the connections held, and after they close, and checks that a
# fresh client is served while they are held. Loopback only; `sluicegate demo`
# provides the backends.
#
#   bash benches/soak/idle10k.sh [N [ROUNDS]]
#
# A second round shows whether the memory of the first is reused.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
n=${1:-10000}
rounds=${2:-2}
binary=target/release/sluicegate
[[ -x $binary ]] || cargo build --release --locked --bin sluicegate
ulimit -n "$(ulimit -Hn)"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
admin=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
dir=$(mktemp -d)
(cd "$dir" && exec "$OLDPWD/$binary" demo --port "$port" --admin-port "$admin") >"$dir/demo.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$port/" >/dev/null && break; sleep 0.1; done
reading() { echo "rss $(awk '/VmRSS/ {print $2}' /proc/$pid/status) KiB, fds $(ls /proc/$pid/fd | wc -l)"; }
echo "before: $(reading)"
for round in $(seq "$rounds"); do
    coproc IDLE { python3 benches/peers/idle_conns.py "$port" "$n" localhost; }
    read -r _ ok failed <&"${IDLE[0]}"
    echo "round $round, held: $ok open, $failed failed: $(reading)"
    start=$(date +%s%N)
    code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/")
    echo "round $round, a fresh client meanwhile: $code in $(( ($(date +%s%N) - start) / 1000000 )) ms"
    echo >&"${IDLE[1]}"
    wait "$IDLE_PID" || true
    sleep 2
    echo "round $round, after: $(reading)"
done
