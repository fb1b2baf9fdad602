#!/usr/bin/env bash
# Runs the two-zone example on loopback: a DMZ broker and an intranet broker (`ferrymq standalone`,
# dmz.toml and intranet.toml), and two zone gateways between them (`ferrymq gateway`): inward.toml
# carries `applications` (through the redact-id-numbers policy) and `filings` (FIFO) from the DMZ to
# the intranet, outward.toml carries `decisions` (through the deny-unclassified policy) back.
#
#   ./run.sh         start the brokers, create the topics and the gateways' FIFO group, start the
#                    gateways, wait until both answer /healthz, print the addresses and
#                    `zones ready`, then keep running until Ctrl-C (SIGINT) or SIGTERM, and stop
#                    everything: the gateways first, then the brokers
#   ./run.sh start   the same, but return once the zones are ready and leave them running
#   ./run.sh stop    stop what `run` or `start` started (SIGTERM to each process, by its pid file)
#
# Environment:
#   FERRYMQ          the ferrymq binary (default: `ferrymq` on PATH, else this checkout's
#                    target/release/ferrymq)
#   DATA_DIR         where the brokers and gateways keep their data, and run/ their logs, pid files
#                    and the gateways' generated configuration files (default ./zones-data)
#   BASE_PORT        DMZ broker gRPC on BASE_PORT and admin on +1, the inward gateway's admin on +2,
#                    the outward gateway's on +3, intranet broker gRPC on +10 and admin on +11.
#                    Default 8081, the ports in the *.toml files.
#   READY_TIMEOUT_S  how long to wait for the zones to come up (default 60)
#   STOP_TIMEOUT_S   how long each process may take to stop before it is killed (default 30)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
base_port=${BASE_PORT:-8081}
ready_timeout_s=${READY_TIMEOUT_S:-60}
stop_timeout_s=${STOP_TIMEOUT_S:-30}
data_dir=${DATA_DIR:-./zones-data}
mkdir -p "$data_dir/run"
data_dir=$(cd "$data_dir" && pwd)
run_dir=$data_dir/run
if [[ $data_dir == *[\"\\]* ]]; then
    echo "run.sh: DATA_DIR $data_dir contains a quote or a backslash; the gateways' configuration files cannot name it" >&2
    exit 2
fi

# The ferrymq binary, for `run` and `start` (`stop` only signals processes).
# shellcheck source=../find-ferrymq.sh
source "$here/../find-ferrymq.sh"

# The *.toml files are written for BASE_PORT 8081; every port is that file's port shifted by
# BASE_PORT - 8081.
default_base=8081
port() { echo $((base_port + $1)); }
dmz_grpc=127.0.0.1:$(port 0)
dmz_admin=127.0.0.1:$(port 1)
inward_admin=127.0.0.1:$(port 2)
outward_admin=127.0.0.1:$(port 3)
intranet_grpc=127.0.0.1:$(port 10)
intranet_admin=127.0.0.1:$(port 11)
port_offsets=(0 1 2 3 10 11)

brokers=(dmz intranet)
gateways=(inward outward)
# The topics, created on both brokers, and their types.
topics=(applications:normal filings:fifo decisions:normal)
# The inward gateway's group for `filings` on the DMZ broker (`<name>-<topic>`); FIFO, so that each
# message group crosses in the order the DMZ stored it.
fifo_group=inward-filings

# The fields of /proc/$1/stat after the command name: [0] is the state, [19] the start time in
# clock ticks since boot, which tells a process apart from a later one that got the same pid.
stat_fields() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    echo "${stat##*) }"
}

start_time() {
    local -a fields
    read -ra fields <<<"$(stat_fields "$1")"
    echo "${fields[19]:-}"
}

# Whether the process recorded in pid file $1 ("pid start-time") is still the one this script
# started, and running (a zombie, exited but not yet collected, counts as gone).
recorded_alive() {
    local pid started
    local -a fields
    read -r pid started <"$1" 2>/dev/null || return 1
    read -ra fields <<<"$(stat_fields "$pid")"
    [[ -n $started && ${fields[19]:-} == "$started" && ${fields[0]:-} != Z ]]
}

# The pid recorded for process $1; empty when its pid file is gone (a `stop` in another shell
# removes them).
pid_of() { cut -d' ' -f1 "$run_dir/$1.pid" 2>/dev/null || true; }

# Starts `ferrymq $2…` in the background as process $1, its output in run/$1.log. Each process gets
# a session of its own, so that Ctrl-C in the terminal reaches only this script, which then stops
# the gateways before the brokers they forward between.
launch() {
    local name=$1
    shift
    if command -v setsid >/dev/null; then
        setsid "$ferrymq" "$@" </dev/null >"$run_dir/$name.log" 2>&1 &
    else
        "$ferrymq" "$@" </dev/null >"$run_dir/$name.log" 2>&1 &
    fi
    local pid=$!
    echo "$pid $(start_time "$pid")" >"$run_dir/$name.pid"
}

processes() {
    local f
    for f in "$run_dir"/*.pid; do
        if [[ -e $f ]]; then basename "$f" .pid; fi
    done
}

# Set when a process exited with a status other than 0 (or had to be killed).
failed=0

# Prints how process $1 ended: its exit status when it is a child of this shell (`run`), else only
# that it is gone (`stop` from another shell).
report_exit() {
    local pid status=0
    pid=$(pid_of "$1")
    [[ -n $pid ]] || return 0
    wait "$pid" 2>/dev/null || status=$?
    if ((status == 127)); then
        echo "run.sh: $1 (pid $pid) stopped"
    else
        echo "run.sh: $1 (pid $pid) exited with status $status"
        ((status == 0)) || failed=1
    fi
}

# SIGTERM to every recorded process that is still ours, then wait for each to exit; a process still
# running after STOP_TIMEOUT_S is killed. The gateways first (they finish what they are sending),
# then the brokers.
stop_all() {
    local group name
    for group in "${gateways[*]}" "${brokers[*]}"; do
        local -a stopping=()
        for name in $group; do
            [[ -e $run_dir/$name.pid ]] || continue
            if recorded_alive "$run_dir/$name.pid"; then
                kill -TERM "$(pid_of "$name")" 2>/dev/null || true
                stopping+=("$name")
            else
                rm -f "$run_dir/$name.pid"
            fi
        done
        local deadline=$((SECONDS + stop_timeout_s))
        for name in "${stopping[@]}"; do
            while recorded_alive "$run_dir/$name.pid" && ((SECONDS < deadline)); do
                sleep 0.2
            done
            if recorded_alive "$run_dir/$name.pid"; then
                echo "run.sh: $name did not stop within ${stop_timeout_s}s; killing it" >&2
                kill -KILL "$(pid_of "$name")" 2>/dev/null || true
                failed=1
            fi
            report_exit "$name"
            rm -f "$run_dir/$name.pid"
        done
    done
}

# Stops everything started so far and exits with status 1, after message $1.
give_up() {
    echo "run.sh: $1" >&2
    stop_all
    exit 1
}

# Waits until `$2…` succeeds, checking every 0.5 s that every process started so far still runs;
# gives up after READY_TIMEOUT_S (from the start) or on Ctrl-C/SIGTERM. $1 says what is awaited.
await() {
    local what=$1 name
    shift
    until "$@"; do
        for name in $(processes); do
            if ! recorded_alive "$run_dir/$name.pid"; then
                echo "run.sh: $name exited while starting; the end of $run_dir/$name.log:" >&2
                tail -n 20 "$run_dir/$name.log" >&2
                give_up "stopping the rest"
            fi
        done
        if ((signalled)); then
            give_up "interrupted while waiting for $what"
        fi
        if ((SECONDS >= ready_deadline)); then
            give_up "$what did not happen within ${ready_timeout_s}s (logs in $run_dir)"
        fi
        sleep 0.5
    done
}

# Whether a GET of http://$1$2 answers 200 (through bash's /dev/tcp: no HTTP client needed).
http_ok() {
    local status
    status=$(
        exec 2>/dev/null
        exec 3<>"/dev/tcp/${1%:*}/${1##*:}" || exit 1
        printf 'GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n' "$2" "$1" >&3 || exit 1
        read -r -t 5 _ code _ <&3 || exit 1
        echo "$code"
    ) || return 1
    [[ $status == 200 ]]
}

brokers_answer() {
    "$ferrymq" admin --admin-addr "$dmz_admin" topic list >/dev/null 2>&1 &&
        "$ferrymq" admin --admin-addr "$intranet_admin" topic list >/dev/null 2>&1
}

gateways_answer() { http_ok "$inward_admin" /healthz && http_ok "$outward_admin" /healthz; }

# Runs `ferrymq admin --admin-addr $1 $2…`; on failure, stops everything and exits.
admin() {
    local addr=$1 out
    shift
    out=$("$ferrymq" admin --admin-addr "$addr" "$@" 2>&1) ||
        give_up "ferrymq admin --admin-addr $addr $* failed: $out"
}

# Escapes $1 for the replacement side of a sed `s|…|…|`.
sed_replacement() { printf '%s' "$1" | sed -e 's/[\\&|]/\\&/g'; }

# Writes run/$1.toml: the gateway's file next to this script with its data directory in DATA_DIR,
# its ports shifted for BASE_PORT, and relative component paths made absolute (a relative path in a
# gateway's file is relative to the file, and the copy is elsewhere).
write_gateway_config() {
    local name=$1 offset
    local -a script=(-e "s|^data_dir = \"[^\"]*\"|data_dir = \"$(sed_replacement "$data_dir/$name")\"|"
        -e "s|^component = \"\([^/\"][^\"]*\)\"|component = \"$(sed_replacement "$here")/\1\"|")
    # Two passes, so that a shifted port is never taken for another default one.
    for offset in "${port_offsets[@]}"; do
        script+=(-e "s|127\.0\.0\.1:$((default_base + offset))\b|127.0.0.1:@port+$offset@|g")
    done
    for offset in "${port_offsets[@]}"; do
        script+=(-e "s|@port+$offset@|$(port "$offset")|g")
    done
    sed "${script[@]}" "$here/$name.toml" >"$run_dir/$name.toml"
}

start_zones() {
    local name spec
    find_ferrymq
    for name in $(processes); do
        if recorded_alive "$run_dir/$name.pid"; then
            echo "run.sh: $name of an earlier run still runs (pid $(pid_of "$name")); run '$0 stop' first" >&2
            exit 2
        fi
        rm -f "$run_dir/$name.pid"
    done

    # The gateways refuse to start without their policies' components.
    local missing=0 component
    for name in "${gateways[@]}"; do
        while read -r component; do
            [[ $component == /* ]] || component=$here/$component
            if [[ ! -f $component ]]; then
                echo "run.sh: $component is missing (named by $name.toml)" >&2
                missing=1
            fi
        done < <(sed -n 's/^component = "\(.*\)"$/\1/p' "$here/$name.toml")
    done
    if ((missing)); then
        echo "run.sh: build the example plugins first: (cd plugins && cargo build --release --target wasm32-wasip2)" >&2
        exit 2
    fi

    ready_deadline=$((SECONDS + ready_timeout_s))
    launch dmz standalone --config "$here/dmz.toml" --data-dir "$data_dir/dmz" \
        --grpc-listen "$dmz_grpc" --admin-listen "$dmz_admin"
    launch intranet standalone --config "$here/intranet.toml" --data-dir "$data_dir/intranet" \
        --grpc-listen "$intranet_grpc" --admin-listen "$intranet_admin"
    await "the brokers answering" brokers_answer

    # Topics and the FIFO group before the gateways start: a gateway that found its group missing
    # would have it created as an ordinary (unordered) one.
    for spec in "${topics[@]}"; do
        admin "$dmz_admin" topic create "${spec%%:*}" --type "${spec##*:}" --queues 4
        admin "$intranet_admin" topic create "${spec%%:*}" --type "${spec##*:}" --queues 4
    done
    admin "$dmz_admin" group create "$fifo_group" --fifo

    for name in "${gateways[@]}"; do
        write_gateway_config "$name"
        launch "$name" gateway --config "$run_dir/$name.toml"
    done
    await "the gateways answering /healthz" gateways_answer

    echo "dmz broker:       gRPC $dmz_grpc, admin $dmz_admin (pid $(pid_of dmz))"
    echo "intranet broker:  gRPC $intranet_grpc, admin $intranet_admin (pid $(pid_of intranet))"
    echo "inward gateway:   dmz -> intranet, admin http://$inward_admin (pid $(pid_of inward));" \
        "applications (redact-id-numbers), filings (FIFO)"
    echo "outward gateway:  intranet -> dmz, admin http://$outward_admin (pid $(pid_of outward));" \
        "decisions (deny-unclassified; refused ones in $data_dir/outward/decisions.jsonl)"
    local listed=""
    for spec in "${topics[@]}"; do
        listed+="${listed:+, }${spec%%:*}"
        [[ ${spec##*:} == normal ]] || listed+=" (${spec##*:})"
    done
    echo "topics on both brokers: $listed; group $fifo_group (fifo) on the dmz broker"
    echo "data, logs, pid files and the gateways' generated configuration in $data_dir"
    echo "zones ready"
}

signalled=0
case ${1:-run} in
run)
    trap 'signalled=1' INT TERM
    start_zones
    echo "Ctrl-C stops the zones"
    declare -A reported=()
    while ((!signalled)); do
        alive=0
        for name in $(processes); do
            if recorded_alive "$run_dir/$name.pid"; then
                alive=1
            elif [[ -z ${reported[$name]:-} ]]; then
                reported[$name]=1
                report_exit "$name"
            fi
        done
        if ((!alive)); then
            echo "run.sh: every process has exited"
            rm -f "$run_dir"/*.pid
            exit "$failed"
        fi
        sleep 1 &
        wait $! || true
    done
    echo "run.sh: stopping the zones"
    stop_all
    exit "$failed"
    ;;
start)
    trap 'signalled=1' INT TERM
    start_zones
    echo "'$0 stop' stops the zones"
    ;;
stop)
    stop_all
    ;;
*)
    echo "usage: $0 [run|start|stop]" >&2
    exit 2
    ;;
esac
