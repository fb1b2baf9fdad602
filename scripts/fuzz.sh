#!/usr/bin/env bash
# Runs every cargo-fuzz target of fuzz/ for SECONDS each (default 600), one after another, and prints
# each target's executions and executions per second. Corpora grow in fuzz/corpus/<target>/; a
# crash is kept in fuzz/artifacts/<target>/ and ends the script with the command that replays it.
#
#   scripts/fuzz.sh [SECONDS]
#
# Not part of scripts/test.sh: CI runs the seeded property tests instead, with a fixed budget
# (docs/testing.md, "Fuzzing"). Needs the nightly toolchain and cargo-fuzz
# (`cargo install cargo-fuzz --locked`); CARGO_BUILD_JOBS limits the build's parallelism.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

seconds="${1:-600}"
case "$seconds" in
  ''|*[!0-9]*) printf 'usage: %s [SECONDS]\n' "$0" >&2; exit 2 ;;
esac

say() { printf '== %s\n' "$*" >&2; }

command -v cargo-fuzz >/dev/null 2>&1 || { say "cargo-fuzz is missing: cargo install cargo-fuzz --locked"; exit 1; }
rustup toolchain list | grep -q '^nightly' || { say "the nightly toolchain is missing: rustup toolchain add nightly"; exit 1; }

say "building the fuzz targets (nightly, address sanitizer)"
cargo +nightly fuzz build

# Options beyond libFuzzer's defaults, per target.
options() {
  case "$1" in
    sql) echo "-dict=dict/sql.dict" ;;
    store_recovery) echo "-max_len=17409" ;;
    replication) echo "-max_len=16384" ;;
    *) echo "" ;;
  esac
}

failed=()
summary=()
for target in $(cargo +nightly fuzz list); do
  mkdir -p "corpus/$target"
  log="$(mktemp)"
  say "$target: ${seconds} s"
  # shellcheck disable=SC2046 # the options are separate words
  if cargo +nightly fuzz run "$target" "corpus/$target" -- \
      -max_total_time="$seconds" -print_final_stats=1 $(options "$target") >"$log" 2>&1; then
    status=ok
  else
    status=FAILED
    failed+=("$target")
    grep -E 'SUMMARY|panicked|Test unit written to' "$log" >&2 || tail -n 20 "$log" >&2
  fi
  execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)"
  rate="$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)"
  summary+=("$(printf '%-16s %-6s %12s execs %8s/s' "$target" "$status" "${execs:-?}" "${rate:-?}")")
  rm -f "$log"
done

say "summary (${seconds} s each)"
printf '%s\n' "${summary[@]}"
if [ "${#failed[@]}" -gt 0 ]; then
  say "failed: ${failed[*]} (replay: cd fuzz && cargo +nightly fuzz run <target> artifacts/<target>/<file>)"
  exit 1
fi
