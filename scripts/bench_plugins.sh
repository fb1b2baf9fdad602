#!/usr/bin/env bash
# What a filter plugin costs in each language: the enterprise-inbox filter of plugins/ (Rust) and
# plugins/{python,js,c}/ built with `ferrymq plugin build`, then measured by `ferrymq plugin test
# --bench` in the broker's engine and limits on bench/plugins/messages.jsonl (16 messages, five
# properties and a 1 KiB body each; the filter reads one property): a new instance's first call,
# and the cost per message at batches of 32 and 256. Needs the toolchains scripts/test.sh installs.
#
#   scripts/bench_plugins.sh               # release build
#   PROFILE=ci scripts/bench_plugins.sh    # the test build (light optimisation: figures high)
set -euo pipefail
cd "$(dirname "$0")/.."
PROFILE="${PROFILE:-release}"
OUT="${OUT:-target/bench-plugins}"
cargo build --profile "$PROFILE" --quiet -p ferrymq-server
BIN="$PWD/target/$PROFILE/ferrymq"
MESSAGES="$PWD/bench/plugins/messages.jsonl"
export PATH="$PWD/sdk/python/.venv/bin:$PATH"
export FERRYMQ_COMPONENTIZE_QJS="$PWD/sdk/js/node_modules/componentize-qjs"
# Compiled components are cached here between runs, as a broker caches them in its data directory.
export XDG_CACHE_HOME="$PWD/$OUT/cache"
rm -rf "$OUT/projects" && mkdir -p "$OUT/projects" "$XDG_CACHE_HOME"

(cd plugins && env -u RUSTFLAGS -u CARGO_BUILD_TARGET cargo build --release --quiet --target wasm32-wasip2 -p enterprise-inbox)
components=("rust=$PWD/plugins/target/wasm32-wasip2/release/enterprise_inbox.wasm")
for lang in python js c; do
  cp -r "plugins/$lang/enterprise-inbox" "$OUT/projects/$lang"
  (cd "$OUT/projects/$lang" && "$BIN" plugin build >/dev/null 2>&1) || { echo "building the $lang plugin failed" >&2; exit 1; }
  components+=("$lang=$PWD/$OUT/projects/$lang/enterprise-inbox.wasm")
done

for entry in "${components[@]}"; do
  lang="${entry%%=*}" file="${entry#*=}"
  printf '== %s (%s bytes)\n' "$lang" "$(stat -c %s "$file")"
  # A first run compiles (and caches); the measured run loads the cached compilation.
  "$BIN" plugin test "$file" --messages "$MESSAGES" --param enterprise_ids=E1,E3 >/dev/null 2>&1
  "$BIN" plugin test "$file" --messages "$MESSAGES" --param enterprise_ids=E1,E3 --bench 2>&1 >/dev/null \
    | grep -v '^$' | tee "$OUT/$lang.txt"
done

# The consumer path with each language's filter bound (send, store, receive in batches of 32, ack;
# in process), beside no filter and the Rust one.
filters=""
for entry in "${components[@]}"; do
  lang="${entry%%=*}"
  [ "$lang" = rust ] || filters="${filters:+$filters,}$entry"
done
FERRYMQ_BENCH_FILTERS="$filters" cargo bench --quiet -p ferrymq-policy --bench pipeline 2>&1 \
  | grep -E "^pipeline|thrpt" | tee "$OUT/pipeline.txt"
