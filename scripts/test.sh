#!/usr/bin/env bash
# Installs every test prerequisite and runs ferrymq's whole test suite. CI runs exactly this script.
#
# Long variants are opt-in through environment variables:
#   FERRYMQ_CRASH_POINTS=N   seeded crash points per flush mode in the store crash test (default 1000 sync / 300 async)
#   FERRYMQ_CLUSTER_KILLS=N  masters killed (kill -9) per replication mode in the cluster tests (default 20)
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '== %s\n' "$*" >&2; }

# System tools the tests drive: mkfs.ext4 and mount for the real disk-full test; ip (network
# namespaces, veth, a bridge) and nft (partitions) for the cluster tests.
missing=()
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v nft >/dev/null 2>&1 || missing+=(nftables)
command -v mkfs.ext4 >/dev/null 2>&1 || missing+=(e2fsprogs)
command -v mount >/dev/null 2>&1 || missing+=(mount)
command -v losetup >/dev/null 2>&1 || missing+=(util-linux)
if [ "${#missing[@]}" -gt 0 ]; then
  say "installing ${missing[*]}"
  if [ "$(id -u)" -eq 0 ]; then apt-get update -qq && apt-get install -y -qq "${missing[@]}"
  else sudo apt-get update -qq && sudo apt-get install -y -qq "${missing[@]}"; fi
fi

# rust-toolchain.toml pins the toolchain; rustup installs it (with rustfmt and clippy) on first use.
say "toolchain: $(rustc --version)"

# The official RocketMQ clients the compatibility tests drive (tests/clients/README.md).
say "official clients: Python"
py=tests/clients/python
[ -x "$py/.venv/bin/python" ] || python3 -m venv "$py/.venv"
"$py/.venv/bin/pip" install --quiet --disable-pip-version-check -r "$py/requirements.txt"
say "official clients: Node.js"
command -v npm >/dev/null 2>&1 || { say "npm is missing: install Node.js 20 or newer"; exit 1; }
(cd tests/clients/node && npm ci --no-audit --no-fund --loglevel=error)
say "official clients: Rust (crate rocketmq 5.0.0)"
(cd tests/clients/rust && cargo build --locked --quiet)

# The Wasm plugin side: the SDK (native tests), then the example and fixture plugins the broker's
# tests load, built as components for wasm32-wasip2 (plugins/ is its own workspace).
say "plugins: SDK and example plugins (wasm32-wasip2)"
rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
(cd sdk/rust && cargo fmt -- --check && cargo clippy --locked --all-targets --quiet -- -D warnings \
  && cargo test --locked --quiet)
(cd plugins && cargo fmt --all -- --check \
  && cargo clippy --locked --release --target wasm32-wasip2 --workspace --quiet -- -D warnings \
  && cargo build --locked --release --target wasm32-wasip2 --workspace --quiet)

say "format"
cargo fmt --all -- --check

say "lint"
cargo clippy --profile ci --workspace --all-targets -- -D warnings

say "tests"
# The cluster tests run five to seven processes under load each; they run on their own afterwards,
# one at a time, so that they do not starve the timing of the tests beside them.
cargo test --profile ci --workspace --lib --bins --tests --examples -- --skip netns_cluster::
say "benchmarks, once each as tests"
cargo test --profile ci --workspace --bench '*'
say "cluster tests (network namespaces)"
cargo test --profile ci -p ferrymq-server --test e2e -- netns_cluster:: --test-threads=1

say "all tests passed"
