#!/usr/bin/env bash
# Builds the libFuzzer targets on the stable toolchain and runs each for a
# bounded time. No nightly and no cargo-fuzz: the coverage instrumentation
# that cargo-fuzz adds is a set of stable `-C` flags, passed here directly
# (no sanitizer: safe Rust plus overflow checks and debug assertions).
#
#   fuzz/run.sh [SECONDS] [TARGET...]    default: 30 s for every target
#
# Corpora grow in fuzz/corpus/<target> (seeded from fuzz/seeds/<family>);
# a crash is written to fuzz/artifacts/<target>/ and fails the run.
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-30}
shift || true
targets=("$@")
if ((${#targets[@]} == 0)); then
  targets=(qcow2_header qcow2_reader qcow2_stream qcow2_compare layers tar_extract registry_manifest registry_layers upload_form xz_blocks)
fi
export RUSTFLAGS="-Cpasses=sancov-module \
  -Cllvm-args=-sanitizer-coverage-level=4 \
  -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
  -Cllvm-args=-sanitizer-coverage-pc-table \
  -Cllvm-args=-sanitizer-coverage-trace-compares \
  --cfg fuzzing -Cdebug-assertions -Coverflow-checks -Cdebuginfo=1"
# An explicit --target keeps RUSTFLAGS off build scripts and proc macros,
# which are not linked against libFuzzer.
host=$(rustc -vV | sed -n 's/^host: //p')
# The committed Cargo.lock pins versions; cargo adds only what a change of
# the workspace's dependencies needs.
cargo build --release --bins --target "$host"
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t" "artifacts/$t"
  # Seeds by family: qcow2_* share seeds/qcow2, tar_extract uses seeds/tar.
  seeds=()
  [ -d "seeds/${t%%_*}" ] && seeds=("seeds/${t%%_*}")
  echo "fuzz: $t for ${secs}s"
  # -rss_limit_mb bounds memory (G3); -timeout flags an input that takes
  # more than 10 s (a hang); -max_len keeps inputs small enough to mutate.
  if ! "./target/$host/release/$t" "corpus/$t" "${seeds[@]}" \
    -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 -max_len=262144 \
    -artifact_prefix="artifacts/$t/" -print_final_stats=1 >"artifacts/$t.log" 2>&1; then
    tail -n 40 "artifacts/$t.log"
    echo "fuzz: $t found a failure; the input is in fuzz/artifacts/$t/" >&2
    exit 1
  fi
  grep -E '^(Done|stat::(average_exec_per_sec|new_units_added|peak_rss_mb))' "artifacts/$t.log"
done
