#!/usr/bin/env bash
# Peer load benchmark: nginx, HAProxy, sluicegate and the floor binary side
# by side on this machine (see docs/BENCHMARKS.md).
#
#   bash benches/peers/run.sh           # full run: 5 alternating rounds, ~45 min
#   bash benches/peers/run.sh --quick   # 1 short round, ~6 min
#
# Other options go to peers.py (--help). Results: target/peers/results.{json,md}
# (results-quick.* for --quick).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
source benches/peers/setup.sh
peers_setup
exec python3 -u benches/peers/peers.py "$@"
