#!/usr/bin/env bash
# Measures ferrymq end to end beside its peers, one after another on this machine, with the same
# workload and durability setting, and the machine's own limits in the same run; then rewrites the
# "End to end" section of docs/benchmarks.md from the results. Takes about 15 minutes.
#
#   BENCH_SECONDS=N   length of each measured run (default 20)
#   BENCH_OUT=DIR     where data and results go (default target/bench-run; emptied first)
#   RMQRS_BIN=DIR     where rocketmq-rust 1.0's binaries are (default ../peers/rmqrs/bin); that peer is
#                     skipped when they are missing. Build them once, outside this repository (about
#                     two hours on 2 cores; needs protoc, Debian protobuf-compiler):
#                       cargo install --locked --root DIR/.. rocketmq-namesrv@1.0.0 rocketmq-broker@1.0.0 rocketmq-proxy@1.0.0
#
# A benchmark is not a test: nothing here fails on a slow figure. Every server runs on 127.0.0.1 only
# and is stopped by its PID when the script ends.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SECS=${BENCH_SECONDS:-20}
OUT=${BENCH_OUT:-$ROOT/target/bench-run}
RMQRS_BIN=${RMQRS_BIN:-$ROOT/../peers/rmqrs/bin}
RESULTS=$OUT/results

say() { printf '== %s\n' "$*" >&2; }

# --- prerequisites -----------------------------------------------------------------------------------
missing=()
command -v nats-server >/dev/null 2>&1 || missing+=(nats-server)
[ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] || missing+=(rabbitmq-server)
command -v fio >/dev/null 2>&1 || missing+=(fio)
command -v iperf3 >/dev/null 2>&1 || missing+=(iperf3)
if [ "${#missing[@]}" -gt 0 ]; then
  say "installing ${missing[*]}"
  sudo=(); [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${missing[@]}"
fi

say "building ferrymq (release) and the peer drivers"
cargo build --release --locked -p ferrymq-server --quiet
CARGO_TARGET_DIR=$ROOT/target/peers cargo build --release --locked --quiet --manifest-path bench/peers/Cargo.toml
FERRYMQ=$ROOT/target/release/ferrymq
PEERS=$ROOT/target/peers/release/ferrymq-peer-bench

rm -rf "$OUT"
mkdir -p "$RESULTS"

# --- process bookkeeping: everything started here is stopped here, by PID ------------------------------
pids=()
stop_all() { # SIGTERM, then SIGKILL for whatever is still running 20 s later
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  local deadline=$((SECONDS + 20))
  for pid in "${pids[@]}"; do
    while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.2; done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  pids=()
}
RABBIT_NODE=ferrymq-bench@localhost
rabbit_epmd_before=$(pgrep -x epmd || true)
stop_rabbitmq() {
  [ -n "${RABBIT_STARTED:-}" ] || return 0
  HOME=$OUT/rabbitmq /usr/lib/rabbitmq/bin/rabbitmqctl -n "$RABBIT_NODE" stop > /dev/null 2>&1 || true
  # RabbitMQ started epmd (Erlang's port mapper) if none ran before: stop that one, by its PID.
  if [ -z "$rabbit_epmd_before" ]; then
    local epmd; epmd=$(pgrep -x epmd || true)
    [ -z "$epmd" ] || kill $epmd 2>/dev/null || true
  fi
  RABBIT_STARTED=
}
trap 'stop_all; stop_rabbitmq' EXIT

wait_port() { # host port seconds
  local deadline=$((SECONDS + $3))
  until (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; do
    [ "$SECONDS" -lt "$deadline" ] || { say "nothing listens on $1:$2 after $3 s"; return 1; }
    sleep 0.2
  done
}

machine() { # the load before a run, for the noise column
  cut -d' ' -f1 /proc/loadavg
}

# bench_run NAME COMMAND...: runs one workload, keeps its JSON report with the load before it; a run
# that produced no report is kept as a failure with the end of its error output.
bench_run() {
  local name=$1; shift
  say "$name"
  local load; load=$(machine)
  "$@" --json --quiet > "$RESULTS/$name.json.tmp" 2> "$RESULTS/$name.err" || say "$name reported errors"
  python3 - "$RESULTS/$name.json.tmp" "$RESULTS/$name.json" "$load" "$RESULTS/$name.err" <<'PY'
import json, sys
try:
    report = json.load(open(sys.argv[1]))
except ValueError:
    lines = [l for l in open(sys.argv[4]).read().splitlines() if l.strip()]
    report = {"failed": lines[-1] if lines else "no output", "send_msg_per_s": 0, "sent": 0}
report["load_before"] = float(sys.argv[3])
json.dump(report, open(sys.argv[2], "w"), indent=1)
PY
  rm -f "$RESULTS/$name.json.tmp"
}

# half_peak NAME...: half the best send rate among the named results
half_peak() {
  python3 -c 'import json,sys; print(max(1, int(max(json.load(open(f + ".json"))["send_msg_per_s"] for f in sys.argv[1:]) / 2)))' \
    "${@/#/$RESULTS/}"
}
sent_total() { # messages sent by the named results together
  python3 -c 'import json,sys; print(sum(json.load(open(f + ".json"))["sent"] for f in sys.argv[1:]))' "${@/#/$RESULTS/}"
}

# The workloads: every target runs the same ones. Peak throughput is the better of two shapes, so
# that a broker that needs more messages in flight is not judged at a shape that starves it.
ASYNC=(--size 1024 --producers 16 --batch 32 --duration "${SECS}s")
WIDE=(--size 1024 --producers 32 --batch 64 --duration "${SECS}s")
SYNC64=(--size 1024 --producers 64 --batch 1 --duration "${SECS}s")
E2E=(--size 1024 --producers 16 --batch 32 --consumers 4 --duration "${SECS}s")
# Consumers drain what the two produce runs stored; the rate counts until the last message.
consume_all() { echo --size 1024 --consumers 4 --duration 120s --count "$(sent_total "$@")"; }

# --- the machine's limits, in this run -----------------------------------------------------------------
say "machine: disk and loopback"
FIO=$OUT/fio.dat
fio --name=seq --filename="$FIO" --rw=write --bs=1M --size=2G --ioengine=psync --end_fsync=1 \
  --output-format=json > "$RESULTS/disk-seq.json"
fio --name=sync64k --filename="$FIO" --rw=write --bs=64k --size=1G --ioengine=psync --fdatasync=1 \
  --runtime=10 --output-format=json > "$RESULTS/disk-sync-64k.json"
fio --name=sync4k --filename="$FIO" --rw=write --bs=4k --size=256M --ioengine=psync --fdatasync=1 \
  --runtime=10 --output-format=json > "$RESULTS/disk-sync-4k.json"
rm -f "$FIO"
iperf3 -s -B 127.0.0.1 -p 15201 > /dev/null 2>&1 & pids+=($!)
wait_port 127.0.0.1 15201 10
iperf3 -c 127.0.0.1 -p 15201 -t 5 -J > "$RESULTS/loopback.json"
iperf3 -c 127.0.0.1 -p 15201 -t 5 -l 1K -J > "$RESULTS/loopback-1k.json"
stop_all

# --- ferrymq ---------------------------------------------------------------------------------------------
# Retention by disk usage is set high: a thin-provisioned disk can look 75 % full while it has room,
# and retention would then delete what the consume run is about to read.
cat > "$OUT/ferrymq.toml" <<TOML
[store]
disk_usage_max_ratio = 0.97
disk_full_ratio = 0.99
TOML
ferrymq_start() { # flush
  "$FERRYMQ" standalone --config "$OUT/ferrymq.toml" --data-dir "$OUT/ferrymq-$1" --flush "$1" \
    --grpc-listen 127.0.0.1:18081 --admin-listen 127.0.0.1:18082 --log-level warn > "$OUT/ferrymq-$1.log" 2>&1 & pids+=($!)
  wait_port 127.0.0.1 18082 30
  for topic in bench e2e; do
    "$FERRYMQ" admin --admin-addr 127.0.0.1:18082 topic create "$topic" --type normal --queues 8 > /dev/null
  done
  "$FERRYMQ" admin --admin-addr 127.0.0.1:18082 group create bench > /dev/null
}
FB=("$FERRYMQ" bench --addr 127.0.0.1:18081)

ferrymq_start async
bench_run ferrymq-async-produce "${FB[@]}" produce "${ASYNC[@]}"
bench_run ferrymq-async-produce-wide "${FB[@]}" produce "${WIDE[@]}"
bench_run ferrymq-async-consume "${FB[@]}" consume $(consume_all ferrymq-async-produce ferrymq-async-produce-wide)
bench_run ferrymq-async-e2e "${FB[@]}" e2e --topic e2e "${E2E[@]}" \
  --rate "$(half_peak ferrymq-async-produce ferrymq-async-produce-wide)"
bench_run ferrymq-async-produce64 "${FB[@]}" produce "${SYNC64[@]}"
stop_all
ferrymq_start sync
bench_run ferrymq-sync-produce64 "${FB[@]}" produce "${SYNC64[@]}"
bench_run ferrymq-sync-produce "${FB[@]}" produce "${ASYNC[@]}"
stop_all

# --- NATS JetStream (file storage; 2.9 writes through the page cache and syncs on a timer) ------------
say "NATS JetStream $(nats-server --version)"
nats-server -js -sd "$OUT/nats" -a 127.0.0.1 -p 14222 > "$OUT/nats.log" 2>&1 & pids+=($!)
wait_port 127.0.0.1 14222 30
NB=("$PEERS" nats --url 127.0.0.1:14222)
bench_run nats-produce "${NB[@]}" produce "${ASYNC[@]}"
bench_run nats-produce-wide "${NB[@]}" produce "${WIDE[@]}"
bench_run nats-consume "${NB[@]}" consume $(consume_all nats-produce nats-produce-wide)
bench_run nats-e2e "${NB[@]}" e2e --stream e2e "${E2E[@]}" --rate "$(half_peak nats-produce nats-produce-wide)"
stop_all

# --- RabbitMQ quorum queues (fsync before every confirm, in batches) --------------------------------------
say "RabbitMQ $(dpkg-query -W -f '${Version}' rabbitmq-server)"
mkdir -p "$OUT/rabbitmq"
echo "[]." > "$OUT/rabbitmq/enabled_plugins"
(
  export HOME=$OUT/rabbitmq RABBITMQ_NODENAME=$RABBIT_NODE RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
    RABBITMQ_NODE_PORT=15672 RABBITMQ_DIST_PORT=25672 RABBITMQ_MNESIA_BASE=$OUT/rabbitmq/mnesia \
    RABBITMQ_LOG_BASE=$OUT/rabbitmq/log RABBITMQ_ENABLED_PLUGINS_FILE=$OUT/rabbitmq/enabled_plugins \
    ERL_EPMD_ADDRESS=127.0.0.1
  exec setsid /usr/lib/rabbitmq/bin/rabbitmq-server > "$OUT/rabbitmq/out.log" 2>&1
) & pids+=($!)
RABBIT_STARTED=1
wait_port 127.0.0.1 15672 90
RB=("$PEERS" rabbitmq --url amqp://guest:guest@127.0.0.1:15672/%2f)
bench_run rabbitmq-produce64 "${RB[@]}" produce "${SYNC64[@]}"
bench_run rabbitmq-produce "${RB[@]}" produce "${ASYNC[@]}"
bench_run rabbitmq-consume "${RB[@]}" consume $(consume_all rabbitmq-produce64 rabbitmq-produce)
stop_rabbitmq
stop_all

# --- rocketmq-rust 1.0 through its gRPC proxy, driven by ferrymq's own client ---------------------------
# As RocketMQ 5 is deployed: a name server, one broker (ASYNC_FLUSH, its default store settings) and the
# gRPC proxy in cluster mode, every listener on 127.0.0.1. The proxy's local mode (the broker inside
# the proxy's process) refuses every send in 1.0.0, so it is not used.
if [ -x "$RMQRS_BIN/rocketmq-proxy-rust" ] && [ -x "$RMQRS_BIN/rocketmq-namesrv-rust" ] \
  && [ -x "$RMQRS_BIN/rocketmq-broker-rust" ]; then
  say "rocketmq-rust 1.0 (name server, broker, proxy in cluster mode)"
  R=$OUT/rocketmq-rust
  mkdir -p "$R/conf"
  cat > "$R/conf/broker.toml" <<TOML
[broker]
namesrvAddr = "127.0.0.1:29876"
brokerIp1 = "127.0.0.1"
listenPort = 30911
storePathRootDir = "$R/store"

[broker.brokerServerConfig]
bindAddress = "127.0.0.1"

[broker.brokerIdentity]
brokerName = "broker-a"
brokerClusterName = "DefaultCluster"
brokerId = 0

[store]
storeType = "LocalFile"
brokerRole = "ASYNC_MASTER"
storePathRootDir = "$R/store"
haListenAddress = "127.0.0.1"
haListenPort = 30912
TOML
  cat > "$R/proxy.toml" <<TOML
mode = "cluster"
[grpc]
listenAddr = "127.0.0.1:28081"
[remoting]
enabled = false
[cluster]
namesrvAddr = "127.0.0.1:29876"
TOML
  (cd "$R" && RUST_LOG=warn exec "$RMQRS_BIN/rocketmq-namesrv-rust" --rocketmqHome "$R" --listenPort 29876 \
    --bindAddress 127.0.0.1) > "$R/namesrv.log" 2>&1 & pids+=($!)
  wait_port 127.0.0.1 29876 60
  (cd "$R" && ROCKETMQ_HOME=$R ROCKETMQ_SECURITY_PROFILE=development-insecure-loopback RUST_LOG=warn \
    exec "$RMQRS_BIN/rocketmq-broker-rust" -c conf/broker.toml -n 127.0.0.1:29876) > "$R/broker.log" 2>&1 & pids+=($!)
  wait_port 127.0.0.1 30911 120
  python3 scripts/bench_rocketmq_admin.py 127.0.0.1:30911 bench 8 bench
  (cd "$R" && RUST_LOG=warn exec "$RMQRS_BIN/rocketmq-proxy-rust" -c proxy.toml) > "$R/proxy.log" 2>&1 & pids+=($!)
  wait_port 127.0.0.1 28081 120
  RB=("$FERRYMQ" bench --addr 127.0.0.1:28081 --label rocketmq-rust)
  # The name server learns the new topic from the broker's registration: wait until it routes.
  for _ in $(seq 60); do
    "${RB[@]}" produce --count 1 --producers 1 --batch 1 --quiet > /dev/null 2>&1 && break
    sleep 1
  done
  bench_run rocketmq-rust-produce "${RB[@]}" produce "${ASYNC[@]}"
  bench_run rocketmq-rust-produce-wide "${RB[@]}" produce "${WIDE[@]}"
  if [ "$(sent_total rocketmq-rust-produce rocketmq-rust-produce-wide)" -gt 0 ]; then
    bench_run rocketmq-rust-consume "${RB[@]}" consume $(consume_all rocketmq-rust-produce rocketmq-rust-produce-wide)
  fi
  stop_all
else
  say "rocketmq-rust skipped: rocketmq-namesrv-rust, rocketmq-broker-rust and rocketmq-proxy-rust are not all in $RMQRS_BIN (see the top of this script)"
fi

say "writing docs/benchmarks.md"
python3 scripts/bench_report.py "$RESULTS" docs/benchmarks.md
say "done: results in $RESULTS"
