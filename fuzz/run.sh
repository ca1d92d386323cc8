#!/usr/bin/env bash
# Runs every fuzz driver: first over its committed seed corpus (fuzz/corpus/<name>), then for
# SECONDS of fuzzing with its dictionary (fuzz/dict/<name>.dict). New inputs go to a scratch
# directory, never into the committed corpus; a crash leaves its input in fuzz/crashes/ and
# fails the run (commit it to the corpus with the fix).
#   usage: [FUZZ_JOBS=N] fuzz/run.sh SECONDS
set -uo pipefail
SECONDS_EACH=${1:-60}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=$ROOT/build-fuzz/fuzz
SCRATCH=$(mktemp -d)
trap 'rm -rf "$SCRATCH"' EXIT
mkdir -p "$ROOT/fuzz/crashes"
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1
JOBS=${FUZZ_JOBS:-$(nproc)}

# One driver: its corpus, then SECONDS_EACH of fuzzing. Prints one line (and the log's tail when
# it fails) once done, and leaves $SCRATCH/<name>.failed behind on failure.
one() {
    local drv=$1 name corpus dict log
    name=$(basename "$drv")
    corpus=$ROOT/fuzz/corpus/$name
    dict=$ROOT/fuzz/dict/$name.dict
    mkdir -p "$SCRATCH/$name"
    local args=(-artifact_prefix="$ROOT/fuzz/crashes/$name-" -timeout=10 -rss_limit_mb=2048)
    [ -f "$dict" ] && args+=(-dict="$dict")
    log=$SCRATCH/$name.log
    if ! "$drv" "${args[@]}" -runs=0 "$corpus" >"$log" 2>&1; then
        { echo "fuzz: $name fails on its corpus:"; tail -30 "$log"; } >"$SCRATCH/$name.out"
        touch "$SCRATCH/$name.failed"
    elif ! "$drv" "${args[@]}" -max_total_time="$SECONDS_EACH" -print_final_stats=1 \
            "$SCRATCH/$name" "$corpus" >"$log" 2>&1; then
        { echo "fuzz: $name found a crash:"; tail -40 "$log"; } >"$SCRATCH/$name.out"
        touch "$SCRATCH/$name.failed"
    else
        local execs cov
        execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$')
        cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1)
        printf 'fuzz: %-24s ok  %10s runs in %ss  %s\n' "$name" "${execs:-?}" "$SECONDS_EACH" \
            "$cov" >"$SCRATCH/$name.out"
    fi
    cat "$SCRATCH/$name.out"
}

# FUZZ_JOBS drivers at a time (default: one per core): each driver is one single-threaded process.
running=0
for drv in "$BIN"/fuzz_*; do
    [[ $drv == *.d ]] && continue
    one "$drv" &
    running=$((running + 1))
    if [ "$running" -ge "$JOBS" ]; then
        wait -n
        running=$((running - 1))
    fi
done
wait
failed=()
for f in "$SCRATCH"/*.failed; do
    [ -e "$f" ] && failed+=("$(basename "$f" .failed)")
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz: failed: ${failed[*]} (inputs in fuzz/crashes/)"
    exit 1
fi
