#!/usr/bin/env bash
# Instructions per request under callgrind for sluicegate and the floor
# binary, with a per-feature breakdown (see docs/BENCHMARKS.md).
#
#   bash benches/peers/callgrind.sh     # ~2 min; deterministic to a few instructions
#
# Other options go to callgrind.py (--help). Results:
# target/peers/callgrind.{json,md}, raw files in target/peers/callgrind/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
source benches/peers/setup.sh
peers_setup
exec python3 -u benches/peers/callgrind.py "$@"
