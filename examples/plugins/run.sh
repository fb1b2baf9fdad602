#!/usr/bin/env bash
# Runs the plugins example: one `ferrymq standalone` node whose configuration file (ferrymq.toml,
# next to this script) binds three WebAssembly plugins, with the topics they work on.
#
#   ./run.sh    check the plugin components, start the node, create the topics, then keep running
#               until Ctrl-C (SIGINT) or SIGTERM and stop the node cleanly
#
# Environment:
#   FERRYMQ          the ferrymq binary (default: `ferrymq` on PATH, else this checkout's
#                    target/release/ferrymq)
#   DATA_DIR         where the node keeps its data and its log (default ./plugins-data)
#   BASE_PORT        gRPC on BASE_PORT, admin HTTP on BASE_PORT+1 (default 8081, as in ferrymq.toml)
#   READY_TIMEOUT_S  how long to wait for the node to come up (default 60)
#   STOP_TIMEOUT_S   how long the node may take to stop before it is killed (default 30)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
config=$here/ferrymq.toml
base_port=${BASE_PORT:-8081}
grpc=127.0.0.1:$base_port
admin=127.0.0.1:$((base_port + 1))
ready_timeout_s=${READY_TIMEOUT_S:-60}
stop_timeout_s=${STOP_TIMEOUT_S:-30}
data_dir=${DATA_DIR:-./plugins-data}
mkdir -p "$data_dir"
data_dir=$(cd "$data_dir" && pwd)
log=$data_dir/ferrymq.log
topics=(inbox requests applications applications-north applications-south)

# shellcheck source=../find-ferrymq.sh
source "$here/../find-ferrymq.sh"
find_ferrymq

# Every component the configuration binds must exist before the node starts (it refuses to start
# otherwise, naming the binding).
missing=0
while read -r component; do
    [[ $component == /* ]] || component=$here/$component
    if [[ ! -f $component ]]; then
        echo "run.sh: $component is missing" >&2
        missing=1
    fi
done < <(sed -n 's/^component = "\(.*\)"$/\1/p' "$config")
if ((missing)); then
    echo "run.sh: build the example plugins first: (cd plugins && cargo build --release --target wasm32-wasip2)" >&2
    exit 2
fi

# Whether child process $1 is still running (an exited child not yet collected counts as gone).
running() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [[ ${stat:0:1} != Z ]]
}

# SIGTERM to the node, a bounded wait, SIGKILL past it; exits with the node's status.
stop_node() {
    local status=0
    if running "$node"; then
        kill -TERM "$node" 2>/dev/null || true
        local deadline=$((SECONDS + stop_timeout_s))
        while running "$node" && ((SECONDS < deadline)); do
            sleep 0.2
        done
        if running "$node"; then
            echo "run.sh: the node did not stop within ${stop_timeout_s}s; killing it" >&2
            kill -KILL "$node" 2>/dev/null || true
        fi
    fi
    wait "$node" 2>/dev/null || status=$?
    echo "run.sh: the node (pid $node) exited with status $status"
    exit "$status"
}

signalled=0
trap 'signalled=1' INT TERM

"$ferrymq" standalone --config "$config" --data-dir "$data_dir/data" --grpc-listen "$grpc" \
    --admin-listen "$admin" </dev/null >"$log" 2>&1 &
node=$!

deadline=$((SECONDS + ready_timeout_s))
until "$ferrymq" admin --admin-addr "$admin" topic list >/dev/null 2>&1; do
    if ! running "$node"; then
        echo "run.sh: the node exited while starting; the end of $log:" >&2
        tail -n 20 "$log" >&2
        stop_node
    fi
    if ((signalled)) || ((SECONDS >= deadline)); then
        ((signalled)) || echo "run.sh: the node did not come up within ${ready_timeout_s}s (log: $log)" >&2
        stop_node
    fi
    sleep 0.5
done

for topic in "${topics[@]}"; do
    "$ferrymq" admin --admin-addr "$admin" topic create "$topic" --queues 4 >/dev/null
done
"$ferrymq" plugin --admin-addr "$admin" bindings
echo
echo "gRPC $grpc, admin $admin (pid $node); topics: ${topics[*]}; log: $log"
echo "node ready"
echo "Ctrl-C stops the node"

while ((!signalled)) && running "$node"; do
    sleep 1 &
    wait $! || true
done
stop_node
