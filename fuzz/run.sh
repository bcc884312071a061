#!/usr/bin/env bash
# Runs every fuzz target for a while (default 60 s each) with cargo-fuzz on
# nightly, seeding the config targets with the example configs.
#
#   bash fuzz/run.sh            # 60 s per target
#   bash fuzz/run.sh 600        # 10 minutes per target
#
# Needs: rustup toolchain install nightly; cargo install cargo-fuzz.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
seconds=${1:-60}
if ! cargo +nightly fuzz --help >/dev/null 2>&1; then
    echo "cargo-fuzz on nightly is needed: rustup toolchain install nightly && cargo install cargo-fuzz" >&2
    exit 2
fi
mkdir -p corpus/config_toml corpus/config_yaml corpus/admin_json
cp ../config/*.toml corpus/config_toml/ 2>/dev/null || true
cp ../config/*.yaml corpus/config_yaml/ 2>/dev/null || true
printf '%s' '{"weights":{"blue":75,"green":25},"reason":"x","if_revision":1}' > corpus/admin_json/weights
printf '%s' '{"backend":"green"}' > corpus/admin_json/promote
printf '%s' '{"to_revision":1}' > corpus/admin_json/rollback
for target in config_toml config_yaml admin_json; do
    echo "== $target ($seconds s)"
    cargo +nightly fuzz run "$target" "corpus/$target" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -max_len=65536
done
# The differential suite's cases as seeds (70 KiB bodies: a larger max_len).
mkdir -p corpus/h1_differential
(cd .. && DIFF_WRITE_SEEDS=fuzz/corpus/h1_differential \
    cargo test --test differential corpus_has_at_least_200_distinct_cases) \
    || echo "no seeds from tests/differential.rs" >&2
echo "== h1_differential ($seconds s)"
cargo +nightly fuzz run h1_differential corpus/h1_differential -- \
    -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=15 -max_len=131072
