#!/usr/bin/env bash
# Installs every test prerequisite and runs ferrymq's whole test suite. CI runs exactly this script
# (`.ci/run`, no argument). docs/testing.md says how to run parts of it.
#
#   scripts/test.sh           everything: system tools and the official RocketMQ clients installed,
#                             format, lints, every test (cross-process, crash, disk-full on a real file
#                             system, cluster tests in network namespaces), each benchmark once
#   scripts/test.sh --quick   format, lints, unit tests and the in-process integration tests (store,
#                             broker, plugin runtime) with a short crash test: no installation, no
#                             official clients, no cross-process or network-namespace tests, no root,
#                             no benchmarks; a few minutes on a warm cache
#
# Environment variables the tests read (all optional; a failing seeded test prints how to replay it):
#   FERRYMQ_CRASH_POINTS=N   store crash test (host/store/tests/it/crash.rs): seeded crash points per
#                            flush mode (default 1000 sync / 300 async; --quick sets 25 unless given)
#   FERRYMQ_CRASH_BASE=N     first seed of those crash points (default 0): another base, other points
#   FERRYMQ_CRASH_SEED=N     replays the one crash point with seed N instead of the whole range
#   FERRYMQ_TX_KILLS=N       broker kill -9 rounds in the transaction crash test
#                            (host/server/tests/e2e/tx_crash.rs; default 50)
#   FERRYMQ_TX_SEED=N        seed of those rounds, printed at the start (default 2047983838)
#   FERRYMQ_CLUSTER_KILLS=N  masters killed (kill -9) per replication mode in the cluster tests
#                            (host/server/tests/e2e/netns_cluster.rs; default 20)
#   FERRYMQ_GATEWAY_CUTS=N   link cuts (0.1-10 s each) in the two-zone gateway test
#                            (host/server/tests/e2e/netns_gateway.rs; default 50)
#   FERRYMQ_GATEWAY_NETNS_KILLS=N  gateway kill -9s in that test (default 10);
#                            FERRYMQ_GATEWAY_NETNS_SEED=N replays its choices (printed)
#   FERRYMQ_GATEWAY_KILLS=N  gateway kill -9s in the loopback gateway test (gateway.rs; default 5);
#                            FERRYMQ_GATEWAY_SEED=N its seed; FERRYMQ_FERRY_SEED=N the ferry
#                            channel's seed (losses, duplicates, order, damage)
#   FERRYMQ_FUZZ_SEED=N      base seed of the fuzz property tests (default 0; docs/testing.md,
#                            "Fuzzing"): case i uses seed N+i, and a failing case prints its replay
#   FERRYMQ_FUZZ_CASES=N     cases per fuzz property test instead of each test's own budget
set -euo pipefail
cd "$(dirname "$0")/.."

quick=false
case "${1:-}" in
  "") ;;
  --quick) quick=true ;;
  *) printf 'usage: %s [--quick]\n' "$0" >&2; exit 2 ;;
esac

say() { printf '== %s\n' "$*" >&2; }

# The guest workspaces take their flags from their own .cargo/config.toml, never from the host
# build's environment. ferrymq-test-components (tests/components/build.rs) builds them with the
# same variables removed, so after this script its nested builds have nothing left to do.
guest_cargo() {
  local unset=() v
  for v in $(compgen -e); do
    case "$v" in
      CARGO_HOME|CARGO_MAKEFLAGS|CARGO_NET_*|CARGO_HTTP_*|CARGO_REGISTRY_*|CARGO_REGISTRIES_*|CARGO_TERM_*) ;;
      CARGO_*|__CARGO*|RUSTFLAGS|RUSTDOCFLAGS|RUSTC_WORKSPACE_WRAPPER) unset+=(-u "$v") ;;
    esac
  done
  env "${unset[@]}" cargo "$@"
}

if ! $quick; then
  # System tools the tests drive: mkfs.ext4 and mount for the real disk-full test; ip (network
  # namespaces, veth, a bridge) and nft (partitions) for the cluster tests.
  missing=()
  command -v ip >/dev/null 2>&1 || missing+=(iproute2)
  command -v nft >/dev/null 2>&1 || missing+=(nftables)
  command -v mkfs.ext4 >/dev/null 2>&1 || missing+=(e2fsprogs)
  command -v mount >/dev/null 2>&1 || missing+=(mount)
  command -v losetup >/dev/null 2>&1 || missing+=(util-linux)
  # C plugins: clang's wasm32 target with WASI's libc (`ferrymq plugin build` for C projects).
  [ -f /usr/lib/wasm32-wasi/libc.a ] || missing+=(wasi-libc)
  command -v clang >/dev/null 2>&1 || missing+=(clang)
  command -v wasm-ld >/dev/null 2>&1 || missing+=(lld)
  dpkg -s libclang-rt-dev-wasm32 >/dev/null 2>&1 || missing+=(libclang-rt-dev-wasm32)
  if [ "${#missing[@]}" -gt 0 ]; then
    say "installing ${missing[*]}"
    if [ "$(id -u)" -eq 0 ]; then apt-get update -qq && apt-get install -y -qq "${missing[@]}"
    else sudo apt-get update -qq && sudo apt-get install -y -qq "${missing[@]}"; fi
  fi
fi

# rust-toolchain.toml pins the toolchain; rustup installs it (with rustfmt and clippy) on first use.
say "toolchain: $(rustc --version)"

if ! $quick; then
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
fi

# The C, Python and JavaScript plugin SDKs: their unit tests need only cc, python3 and Node.js; the full
# run also installs the component toolchains `ferrymq plugin build` runs in the tests, pinned:
# componentize-py (sdk/python/requirements.txt) and componentize-qjs (sdk/js/package-lock.json);
# C projects use clang and wasi-libc, installed with the system tools above.
say "plugins: C, Python and JavaScript SDKs"
mkdir -p target
for world in FILTER ROUTE TX_CHECK; do
  cc -std=c11 -Wall -Wextra -Werror -g -fsanitize=address,undefined -DFERRYMQ_WORLD_$world -Isdk/c \
    sdk/c/tests/test_sdk.c sdk/c/ferrymq_plugin.c sdk/c/ferrymq_testing.c -o "target/sdk-c-test-$world"
  "target/sdk-c-test-$world" >/dev/null
done
(cd sdk/python && PYTHONPATH=. python3 -m unittest discover -s tests)
if command -v node >/dev/null 2>&1; then
  node --test sdk/js/test/
elif ! $quick; then
  say "node is missing: install Node.js 20 or newer"; exit 1
fi
if ! $quick; then
  sdkpy=sdk/python
  [ -x "$sdkpy/.venv/bin/python" ] || python3 -m venv "$sdkpy/.venv"
  "$sdkpy/.venv/bin/pip" install --quiet --disable-pip-version-check -r "$sdkpy/requirements.txt"
  export PATH="$PWD/$sdkpy/.venv/bin:$PATH"
  (cd sdk/js && npm ci --no-audit --no-fund --loglevel=error)
fi

# The Wasm plugin side: the SDK (native tests), then the example plugins (plugins/) and the test
# fixtures (tests/plugins/), each its own workspace, built as components for wasm32-wasip2.
say "plugins: SDK, example plugins and test fixtures (wasm32-wasip2)"
rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
(cd sdk/rust && cargo fmt -- --check && cargo clippy --locked --all-targets --quiet -- -D warnings \
  && cargo test --locked --quiet)
for guest in plugins tests/plugins; do
  (cd "$guest" && cargo fmt --all -- --check \
    && guest_cargo clippy --locked --release --target wasm32-wasip2 --workspace --quiet -- -D warnings \
    && guest_cargo build --locked --release --target wasm32-wasip2 --workspace --quiet)
done

say "format"
cargo fmt --all -- --check

say "lint"
cargo clippy --profile ci --workspace --all-targets -- -D warnings

if $quick; then
  say "tests: unit and in-process (--quick)"
  # `it` is each library's in-process integration test binary; the real-file-system disk-full test
  # needs root and a loop mount.
  FERRYMQ_CRASH_POINTS="${FERRYMQ_CRASH_POINTS:-25}" \
    cargo test --profile ci --workspace --lib --bins --examples --test it \
    -- --skip disk_full::a_real_full_file_system
  say "quick tests passed (scripts/test.sh with no argument runs everything)"
  exit 0
fi

say "tests"
# The cluster tests run five to seven processes under load each; they run on their own afterwards,
# one at a time, so that they do not starve the timing of the tests beside them.
cargo test --profile ci --workspace --lib --bins --tests --examples -- --skip netns_cluster:: --skip netns_gateway::
say "benchmarks, once each as tests"
cargo test --profile ci --workspace --bench '*'
say "cluster and zone-gateway tests (network namespaces)"
cargo test --profile ci -p ferrymq-server --test e2e -- netns_cluster:: netns_gateway:: --test-threads=1

say "all tests passed"
