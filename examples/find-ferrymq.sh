# Sourced by the examples' run.sh scripts: sets `ferrymq` to the binary to run — $FERRYMQ, else
# `ferrymq` on PATH, else this checkout's release build — or exits 2 saying how to get one.
# Expects `here` to be the sourcing script's directory.
find_ferrymq() {
    if [[ -n ${FERRYMQ:-} ]]; then
        ferrymq=$FERRYMQ
    elif command -v ferrymq >/dev/null; then
        ferrymq=ferrymq
    elif [[ -x $here/../../target/release/ferrymq ]]; then
        ferrymq=$here/../../target/release/ferrymq
    else
        echo "run.sh: no ferrymq binary: put it on PATH, set FERRYMQ, or run 'cargo build --release'" >&2
        exit 2
    fi
}
