#!/usr/bin/env bash
# What replication costs: `ferrymq bench produce` against a standalone node, then a master with one
# slave under async and under sync replication, all on 127.0.0.1 with fresh data directories, one
# after another. Prints one line per run (JSON reports are kept in $OUT).
#
#   scripts/bench_replication.sh                # 10 s per run, release build
#   DURATION=5 FLUSH=sync scripts/bench_replication.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${DURATION:-10}"
FLUSH="${FLUSH:-async}"
OUT="${OUT:-target/bench-replication}"
cargo build --release --quiet -p ferrymq-server
BIN="$PWD/target/release/ferrymq"
rm -rf "$OUT" && mkdir -p "$OUT"
cat > "$OUT/node.toml" <<TOML
[store]
flush = "$FLUSH"
disk_usage_max_ratio = 0.99
disk_full_ratio = 0.995
TOML

pids=()
stop_all() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do
    for _ in $(seq 1 200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  pids=()
}
trap stop_all EXIT

wait_ready() { # log file, line
  for _ in $(seq 1 300); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
  echo "no '$2' in $1" >&2; cat "$1" >&2; exit 1
}

start() { # name, args...
  local name="$1"; shift
  "$BIN" "$@" --config "$OUT/node.toml" --data-dir "$OUT/$name" >"$OUT/$name.log" 2>&1 &
  pids+=("$!")
}

run() { # label, producers, batch
  "$BIN" admin --admin-addr 127.0.0.1:28082 topic create bench --queues 8 >/dev/null
  sleep 1.5 # the slave copies the topic
  "$BIN" bench produce --addr 127.0.0.1:28081 --topic bench --size 1024 --producers "$2" --batch "$3" \
    --duration "$DURATION" --json --quiet >"$OUT/$1-$2x$3.json"
  python3 - "$1" "$OUT/$1-$2x$3.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[2]))
lat = r.get("send_latency_us") or {}
errors = f"  errors {r['errors']}" if r.get("errors") else ""
print(f"{sys.argv[1]:<22} {r['producers']:>2}x{r['batch']:<3} {r['send_msg_per_s']:>9.0f} msg/s  "
      f"ack p50 {lat.get('p50', '?')} us  p99 {lat.get('p99', '?')} us{errors}")
PY
}

for shape in "16 32" "64 1"; do
  set -- $shape
  start solo standalone --grpc-listen 127.0.0.1:28081 --admin-listen 127.0.0.1:28082
  wait_ready "$OUT/solo.log" "ferrymq standalone ready"
  run "standalone" "$1" "$2"; stop_all; rm -rf "$OUT/solo"
  for mode in async sync; do
    start master broker --broker-set a --broker-id 0 --replication "$mode" \
      --grpc-listen 127.0.0.1:28081 --admin-listen 127.0.0.1:28082 --ha-listen 127.0.0.1:28083
    wait_ready "$OUT/master.log" "ferrymq broker ready"
    start slave broker --broker-set a --broker-id 1 --master-ha 127.0.0.1:28083 \
      --grpc-listen 127.0.0.1:28091 --admin-listen 127.0.0.1:28092 --ha-listen 127.0.0.1:28093
    wait_ready "$OUT/master.log" "slave connected"
    run "master+slave $mode" "$1" "$2"; stop_all; rm -rf "$OUT/master" "$OUT/slave"
  done
done
