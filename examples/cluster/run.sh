#!/usr/bin/env bash
# Runs the example cluster on loopback: two name servers, broker sets `a` and `b`, each a master and
# a slave (configured by the *.toml files next to this script).
#
#   ./run.sh         start everything, wait until `ferrymq admin cluster` lists all four brokers,
#                    then keep running until Ctrl-C (SIGINT) or SIGTERM, and stop everything
#   ./run.sh start   the same, but return once the cluster is ready and leave it running
#   ./run.sh stop    stop what `run` or `start` started (SIGTERM to each process, by its pid file)
#
# Environment:
#   FERRYMQ          the ferrymq binary (default: `ferrymq` on PATH, else this checkout's
#                    target/release/ferrymq)
#   DATA_DIR         where the brokers keep their data, logs and pid files (default ./cluster-data)
#   BASE_PORT        name servers on BASE_PORT and BASE_PORT+1; broker n (1 a-master, 2 a-slave,
#                    3 b-master, 4 b-slave) on BASE_PORT+10n (gRPC), +10n+1 (admin), +10n+2 (HA,
#                    masters only). Default 9876, the ports in the *.toml files.
#   READY_TIMEOUT_S  how long to wait for the cluster to come up (default 60)
#   STOP_TIMEOUT_S   how long each process may take to stop before it is killed (default 30)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
base_port=${BASE_PORT:-9876}
ready_timeout_s=${READY_TIMEOUT_S:-60}
stop_timeout_s=${STOP_TIMEOUT_S:-30}
data_dir=${DATA_DIR:-./cluster-data}
mkdir -p "$data_dir/run"
data_dir=$(cd "$data_dir" && pwd)
run_dir=$data_dir/run

# The ferrymq binary, for `run` and `start` (`stop` only signals processes).
# shellcheck source=../find-ferrymq.sh
source "$here/../find-ferrymq.sh"

ns_ports=("$base_port" "$((base_port + 1))")
namesrv_list=127.0.0.1:${ns_ports[0]},127.0.0.1:${ns_ports[1]}
# Broker n has its ports at BASE_PORT+10n….
brokers=(a-master a-slave b-master b-slave)
declare -A broker_index=([a-master]=1 [a-slave]=2 [b-master]=3 [b-slave]=4)

grpc_port() { echo $((base_port + 10 * broker_index[$1])); }
admin_port() { echo $((base_port + 10 * broker_index[$1] + 1)); }
ha_port() { echo $((base_port + 10 * broker_index[$1] + 2)); }

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

# Starts `ferrymq $2…` in the background as process $1, its output in run/$1.log.
launch() {
    local name=$1
    shift
    "$ferrymq" "$@" </dev/null >"$run_dir/$name.log" 2>&1 &
    local pid=$!
    echo "$pid $(start_time "$pid")" >"$run_dir/$name.pid"
}

processes() {
    local f
    for f in "$run_dir"/*.pid; do
        if [[ -e $f ]]; then basename "$f" .pid; fi
    done
}

# SIGTERM to every recorded process that is still ours, then wait for each to exit; a process still
# running after STOP_TIMEOUT_S is killed. Brokers first, then the name servers.
stop_all() {
    local group name
    for group in broker namesrv; do
        local -a stopping=()
        for name in $(processes); do
            case $group:$name in
            namesrv:namesrv-* | broker:[ab]-*) ;;
            *) continue ;;
            esac
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
            fi
            report_exit "$name"
            rm -f "$run_dir/$name.pid"
        done
    done
}

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
    fi
}

# Whether every name server lists both masters and both slaves, each slave following its master.
cluster_ready() {
    local port table
    for port in "${ns_ports[@]}"; do
        table=$("$ferrymq" admin cluster --namesrv "127.0.0.1:$port" 2>/dev/null) || return 1
        # Columns: SET ID ROLE GRPC REPLICATION LOG_END LAG_BYTES LAG_SECONDS MASTER_REACHABLE SLAVES
        awk '$3 == "master" { m++ } $3 == "slave" && $9 == "true" { s++ }
             END { exit !(m == 2 && s == 2) }' <<<"$table" || return 1
    done
}

start_cluster() {
    local i name role
    find_ferrymq
    for name in $(processes); do
        if recorded_alive "$run_dir/$name.pid"; then
            echo "run.sh: $name of an earlier run still runs (pid $(pid_of "$name")); run '$0 stop' first" >&2
            exit 2
        fi
        rm -f "$run_dir/$name.pid"
    done
    for i in 0 1; do
        launch "namesrv-$((i + 1))" namesrv --listen "127.0.0.1:${ns_ports[$i]}"
    done
    for name in "${brokers[@]}"; do
        local -a args=(broker --config "$here/$name.toml" --data-dir "$data_dir/$name"
            --grpc-listen "127.0.0.1:$(grpc_port "$name")" --admin-listen "127.0.0.1:$(admin_port "$name")"
            --namesrv "$namesrv_list")
        [[ $name == *-master ]] && args+=(--ha-listen "127.0.0.1:$(ha_port "$name")")
        launch "$name" "${args[@]}"
    done
    local deadline=$((SECONDS + ready_timeout_s))
    until cluster_ready; do
        for name in $(processes); do
            if ! recorded_alive "$run_dir/$name.pid"; then
                echo "run.sh: $name exited while starting; the end of $run_dir/$name.log:" >&2
                tail -n 20 "$run_dir/$name.log" >&2
                stop_all
                exit 1
            fi
        done
        if ((SECONDS >= deadline)) || ((signalled)); then
            ((signalled)) || echo "run.sh: the cluster did not come up within ${ready_timeout_s}s (logs in $run_dir)" >&2
            stop_all
            exit 1
        fi
        sleep 0.5
    done
    "$ferrymq" admin cluster --namesrv "127.0.0.1:${ns_ports[0]}"
    echo
    for name in "${brokers[@]}"; do
        role=master
        [[ $name == *-slave ]] && role=slave
        echo "$name: gRPC 127.0.0.1:$(grpc_port "$name"), admin 127.0.0.1:$(admin_port "$name") ($role, pid $(pid_of "$name"))"
    done
    echo "name servers: $namesrv_list; data, logs and pid files in $data_dir"
    echo "cluster ready"
}

signalled=0
case ${1:-run} in
run)
    trap 'signalled=1' INT TERM
    start_cluster
    echo "Ctrl-C stops the cluster"
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
            exit 0
        fi
        sleep 1 &
        wait $! || true
    done
    echo "run.sh: stopping the cluster"
    stop_all
    ;;
start)
    trap 'signalled=1' INT TERM
    start_cluster
    echo "'$0 stop' stops the cluster"
    ;;
stop)
    stop_all
    ;;
*)
    echo "usage: $0 [run|start|stop]" >&2
    exit 2
    ;;
esac
