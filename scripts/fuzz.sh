#!/usr/bin/env bash
# Fuzzes one target of fuzz/ with cargo-fuzz (libFuzzer), after (re)writing its seed corpus.
#
#   scripts/fuzz.sh TARGET [SECONDS]   fuzz TARGET for SECONDS (default 600)
#   scripts/fuzz.sh seeds              only write the seed corpora into fuzz/corpus/<target>/
#   scripts/fuzz.sh list               the targets
#
# Targets: gguf_reader, problem_file, tokenizer, problem_validation. Needs the nightly toolchain
# (`rustup toolchain install nightly`) and cargo-fuzz (installed on first use). Seeds are small
# valid files written by the crate's own writers (`write_fuzz_seeds` in tests/fuzz_regressions.rs);
# the corpus grows in fuzz/corpus/<target>/, crashes land in fuzz/artifacts/<target>/, and the
# run's output is kept in fuzz/logs/<target>.log (all git-ignored). Limits: 2048 MB of RSS and
# 10 s per input; a breach counts as a crash. Extra libFuzzer flags can follow in FUZZ_FLAGS.
set -euo pipefail
cd "$(dirname "$0")/.."

TARGETS="gguf_reader problem_file tokenizer problem_validation"
target=${1:-}
seconds=${2:-600}

write_seeds() {
    echo "writing seed corpora into fuzz/corpus/" >&2
    FUZZ_SEEDS_DIR="$PWD/fuzz/corpus" cargo test --quiet -p optima-llm --test fuzz_regressions -- --ignored --exact write_fuzz_seeds >&2
}

case "$target" in
    list) echo "$TARGETS"; exit 0 ;;
    seeds) write_seeds; exit 0 ;;
    "") echo "usage: $0 TARGET [SECONDS] | seeds | list   (targets: $TARGETS)" >&2; exit 2 ;;
esac
case " $TARGETS " in
    *" $target "*) ;;
    *) echo "unknown target $target (targets: $TARGETS)" >&2; exit 2 ;;
esac

command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz
write_seeds
mkdir -p fuzz/logs "fuzz/artifacts/$target"
cd fuzz
# One process, one job: the machine stays usable while it runs.
# shellcheck disable=SC2086
cargo +nightly fuzz run "$target" "corpus/$target" -- \
    -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 ${FUZZ_FLAGS:-} \
    2>&1 | tee "logs/$target.log"
