#!/usr/bin/env bash
# Zero-loss soak (issue 10): steady load through a release sluicegate on
# 127.0.0.1 with a config reload every second, an admin weight change every
# second, and a backend killed (SIGKILL) and restarted every 20 s.
#
#   bash benches/soak/soak.sh                 # 5 minutes
#   bash benches/soak/soak.sh --minutes 2     # shorter
#   bash benches/soak/soak.sh --rate 400      # more load (default 200 req/s)
#
# Passes when no GET failed and no POST reached the backends twice (counted in
# the backends' own logs). Results: target/soak/results.json. Needs python3.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
binary=target/release/sluicegate
if [[ ! -x $binary || -n $(find src Cargo.toml Cargo.lock -newer "$binary" -print -quit) ]]; then
    cargo build --release --locked --bin sluicegate
fi
exec python3 -u benches/soak/soak.py --binary "$binary" "$@"
