#!/usr/bin/env bash
# What the zone gateway costs and carries: two standalone brokers on 127.0.0.1 (zone A, zone B) and
# a `ferrymq gateway` from A to B, without and with a policy plugin (redact-id-numbers), measured
# beside the same run's broker-to-consumer figures on A alone; and what de-duplication costs on
# the send path (one broker, `[broker.dedup]` on and off). 1 KiB messages. Prints one line per run
# (JSON reports are kept in $OUT).
#
#   scripts/bench_gateway.sh                     # 10 s per run, release build
#   DURATION=5 RATE=5000 scripts/bench_gateway.sh
#   PROFILE=ci scripts/bench_gateway.sh          # the test build (light optimisation: figures low)
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${DURATION:-10}"
RATE="${RATE:-10000}"
WORKERS="${WORKERS:-4}"   # the forward's workers (docs/gateway.md)
BACKLOG="${BACKLOG:-300000}"  # messages the drain runs forward
ONLY="${ONLY:-}"          # "gateway" runs only the gateway's runs
PROFILE="${PROFILE:-release}"
OUT="${OUT:-target/bench-gateway}"
cargo build --profile "$PROFILE" --quiet -p ferrymq-server
BIN="$PWD/target/$PROFILE/ferrymq"
# The policy: an example plugin, built for wasm32-wasip2 in its own workspace.
(cd plugins && env -u RUSTFLAGS -u CARGO_BUILD_TARGET cargo build --release --quiet --target wasm32-wasip2 -p redact-id-numbers)
POLICY="$PWD/plugins/target/wasm32-wasip2/release/redact_id_numbers.wasm"
rm -rf "$OUT" && mkdir -p "$OUT"

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
  for _ in $(seq 1 600); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
  echo "no '$2' in $1" >&2; cat "$1" >&2; exit 1
}

broker() { # name, grpc port, admin port, extra TOML
  printf '[store]\ndisk_usage_max_ratio = 0.99\ndisk_full_ratio = 0.995\n%s\n' "$4" >"$OUT/$1.toml"
  "$BIN" standalone --config "$OUT/$1.toml" --data-dir "$OUT/$1" \
    --grpc-listen "127.0.0.1:$2" --admin-listen "127.0.0.1:$3" >"$OUT/$1.log" 2>&1 &
  pids+=("$!")
  wait_ready "$OUT/$1.log" "ferrymq standalone ready"
  "$BIN" admin --admin-addr "127.0.0.1:$3" topic create bench --queues 8 >/dev/null
}

gateway() { # name, policy TOML (may be empty)
  cat >"$OUT/$1.toml" <<TOML
[gateway]
data_dir = "$OUT/$1-data"
admin_listen = "127.0.0.1:28093"
name = "$1"
[source]
endpoints = "127.0.0.1:28081"
[target]
endpoints = "127.0.0.1:28091"
[[forward]]
topic = "bench"
workers = $WORKERS
$2
TOML
  "$BIN" gateway --config "$OUT/$1.toml" >"$OUT/$1.log" 2>&1 &
  pids+=("$!")
  wait_ready "$OUT/$1.log" "ferrymq gateway ready"
}

report() { # label, JSON file
  python3 - "$1" "$2" <<'PY'
import json, sys
r = json.load(open(sys.argv[2]))
e2e = r.get("e2e_latency_us") or {}
send = r.get("send_latency_us") or {}
errors = f"  errors {r['errors']}" if r.get("errors") else ""
line = f"{sys.argv[1]:<34} sent {r['send_msg_per_s']:>8.0f} msg/s  received {r['receive_msg_per_s']:>8.0f} msg/s"
if e2e:
    line += f"  e2e p50 {e2e.get('p50', '?')} us  p99 {e2e.get('p99', '?')} us"
elif send:
    line += f"  ack p50 {send.get('p50', '?')} us  p99 {send.get('p99', '?')} us"
print(line + errors)
PY
}

forwarded() { # the gateway's forwarded count, from its metrics
  python3 - <<'PY'
import urllib.request
text = urllib.request.urlopen("http://127.0.0.1:28093/metrics", timeout=5).read().decode()
print(int(sum(float(l.split()[-1]) for l in text.splitlines() if l.startswith("ferrymq_gateway_messages_forwarded_total"))))
PY
}

drain() { # label: forwards a backlog of $BACKLOG messages the source already holds, and times it
  # from 10 % to 90 % of the backlog forwarded (the steady state, without start-up and the tail)
  local label="$1" start now count t10="" c10="" t90="" c90=""
  start=$(date +%s)
  while :; do
    count=$(forwarded)
    now=$(date +%s.%N)
    if [[ -z $t10 && $count -ge $((BACKLOG / 10)) ]]; then t10=$now c10=$count; fi
    if [[ $count -ge $((BACKLOG * 9 / 10)) ]]; then t90=$now c90=$count; break; fi
    if [[ $(date +%s) -gt $((start + 300)) ]]; then echo "$label: only $count of $BACKLOG forwarded in 300 s" >&2; exit 1; fi
    sleep 0.2
  done
  python3 -c "import sys; n=$c90-$c10; t=$t90-$t10; print(f'{sys.argv[1]:<34} forwarded {n/t:>8.0f} msg/s  ({n} of a {sys.argv[2]}-message backlog in {t:.1f} s)')" "$label" "$BACKLOG"
}

bench() { # label, args...
  local label="$1"; shift
  # A run with refused sends (a policy past its time limit on a loaded machine) still reports them.
  "$BIN" bench "$@" --size 1024 --duration "$DURATION" --json --quiet >"$OUT/$label.json" || true
  report "$label" "$OUT/$label.json"
}

reset() {
  stop_all
  rm -rf "$OUT"/zone-a "$OUT"/zone-b "$OUT"/gw-*-data
}

# One broker: what it accepts (16 producers x 32), and its own end-to-end latency at $RATE.
if [[ $ONLY != gateway ]]; then
broker zone-a 28081 28082 ""
bench "broker produce peak" produce --addr 127.0.0.1:28081 --topic bench --producers 16 --batch 32
reset
# The same with the gateway's policy bound on the broker as a route plugin: what one broker accepts
# with a policy bound, the baseline of the gateway's runs with one.
broker zone-a 28081 28082 "$(printf '[[plugins.bindings]]\nname = "redact"\nkind = "route"\ncomponent = "%s"\ntopic = "bench"\npolicy = "fail-closed"' "$POLICY")"
bench "broker produce peak (policy bound)" produce --addr 127.0.0.1:28081 --topic bench --producers 16 --batch 32
reset
broker zone-a 28081 28082 ""
bench "broker e2e @${RATE}" e2e --addr 127.0.0.1:28081 --topic bench --group direct --rate "$RATE" --batch 8
reset
fi

for policy in none redact-id-numbers; do
  if [[ $policy == none ]]; then toml=""; else toml=$(printf '[forward.policy]\ncomponent = "%s"' "$POLICY"); fi
  # Forwarding capacity: a backlog on the source, then the gateway alone moves it (no producer or
  # consumer competing for the CPU).
  broker zone-a 28081 28082 ""
  broker zone-b 28091 28092 ""
  bench "fill the source (${BACKLOG})" produce --addr 127.0.0.1:28081 --topic bench --producers 16 --batch 32 \
    --count "$BACKLOG"
  gateway "gw-$policy" "$toml"
  drain "gateway ($policy) drain"
  reset
  broker zone-a 28081 28082 ""
  broker zone-b 28091 28092 ""
  gateway "gw-$policy" "$toml"
  # Forwarding at full speed: the gateway's throughput is what reaches zone B.
  bench "gateway ($policy) peak" e2e --addr 127.0.0.1:28081 --consume-addr 127.0.0.1:28091 --topic bench \
    --group far --producers 16 --batch 32
  reset
  broker zone-a 28081 28082 ""
  broker zone-b 28091 28092 ""
  gateway "gw-$policy" "$toml"
  # Latency at a fixed rate: source send to target receipt (the broker e2e above is the baseline).
  bench "gateway ($policy) e2e @${RATE}" e2e --addr 127.0.0.1:28081 --consume-addr 127.0.0.1:28091 \
    --topic bench --group far --rate "$RATE" --batch 8
  reset
done

[[ $ONLY == gateway ]] && exit 0
# De-duplication on the send path: the same broker with the window on (default) and off.
for dedup in true false; do
  broker zone-a 28081 28082 "$(printf '[broker.dedup]\nenabled = %s' "$dedup")"
  bench "dedup=$dedup produce 16x32" produce --addr 127.0.0.1:28081 --topic bench --producers 16 --batch 32
  bench "dedup=$dedup produce 64x1" produce --addr 127.0.0.1:28081 --topic bench --producers 64 --batch 1
  reset
done
