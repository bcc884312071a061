# Sourced by run.sh and callgrind.sh (from the repository root): installs the
# missing tools with apt-get and builds the release binaries, then copies
# them to target/peers/bin so a rebuild during the run cannot swap them.

# command → Debian package
declare -A PEERS_PACKAGES=(
    [nginx]=nginx
    [haproxy]=haproxy
    [wrk]=wrk
    [h2load]=nghttp2-client
    [perf]=linux-perf
    [strace]=strace
    [valgrind]=valgrind
    [callgrind_annotate]=valgrind
    [taskset]=util-linux
    [python3]=python3
    [openssl]=openssl
    [cc]=gcc
)

peers_setup() {
    local missing=() cmd
    for cmd in "${!PEERS_PACKAGES[@]}"; do
        command -v "$cmd" >/dev/null 2>&1 || missing+=("${PEERS_PACKAGES[$cmd]}")
    done
    if ((${#missing[@]})); then
        mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
        echo "==> installing: ${missing[*]}"
        if [[ $(id -u) -ne 0 ]]; then
            echo "need root for apt-get (or install: ${missing[*]})" >&2
            return 1
        fi
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -q
        apt-get install -y -q --no-install-recommends "${missing[@]}"
    fi

    echo "==> cargo build --release (sluicegate, sluicegate-floor)"
    cargo build --release
    cargo build --release -p sluicegate-floor
    mkdir -p target/peers/bin
    cp target/release/sluicegate target/release/sluicegate-floor target/peers/bin/
    # What the copied binaries were built from, for the results files.
    {
        echo "built=$(date -u '+%Y-%m-%d %H:%M:%S UTC')"
        echo "commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
        echo "dirty=$([[ -n $(git status --porcelain -- src Cargo.toml Cargo.lock benches/floor 2>/dev/null) ]] && echo yes || echo no)"
    } > target/peers/bin/BUILD_INFO
}
