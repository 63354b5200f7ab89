#!/usr/bin/env bash
# Runs every fuzz target (of fetchgate-formats, -config and -report) for SECONDS each
# (default 300), one after the other, with the address sanitizer; fails if any target
# crashes, leaks, times out or runs out of memory. Each target's corpus is
# fuzz/corpus/<target> (the committed seed-* inputs plus whatever the runs add, which git
# ignores); a crashing input is left in fuzz/artifacts/<target>/ and its log's tail is
# printed.
#
# Works on the stable toolchain: RUSTC_BOOTSTRAP=1 lets stable rustc take the -Z flags
# cargo-fuzz passes (-Zsanitizer=address). cargo-fuzz is installed if missing.
#   fuzz/run-all.sh            # 5 minutes per target
#   fuzz/run-all.sh 30         # what CI runs (scripts/test.sh)
#   FUZZ_TARGETS="deb822 git" fuzz/run-all.sh 60
set -euo pipefail
cd "$(dirname "$0")"

seconds="${1:-300}"
[[ "$seconds" =~ ^[1-9][0-9]*$ ]] || { echo "usage: $0 [SECONDS]" >&2; exit 2; }
export RUSTC_BOOTSTRAP=1
CARGO_FUZZ_VERSION=0.13.2

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "==> installing cargo-fuzz $CARGO_FUZZ_VERSION"
  cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked
fi

read -r -a targets <<<"${FUZZ_TARGETS:-$(cargo fuzz list | tr '\n' ' ')}"
echo "==> building ${#targets[@]} fuzz targets (address sanitizer)"
start=$SECONDS
cargo fuzz build --sanitizer address
echo "    built in $((SECONDS - start)) s"

logs="$(mktemp -d)"
trap 'rm -rf "$logs"' EXIT
failed=()
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  echo "==> fuzzing $t for $seconds s"
  # -timeout: one input taking 10 s is a hang; -rss_limit_mb: bounded memory is the
  # parsers' promise, 2 GiB is far beyond what any of them may use.
  if cargo fuzz run --sanitizer address "$t" "corpus/$t" -- \
      -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
      >"$logs/$t.log" 2>&1; then
    runs=$(grep -oE '^stat::number_of_executed_units: *[0-9]+' "$logs/$t.log" | grep -oE '[0-9]+$' || echo '?')
    cov=$(grep -oE 'cov: [0-9]+ ft: [0-9]+ corp: [0-9]+/[0-9]+[a-zA-Z]*' "$logs/$t.log" | tail -n 1 || true)
    echo "    ok: $runs runs, $cov"
  else
    echo "    FAILED; the end of its log:"
    tail -n 40 "$logs/$t.log" | sed 's/^/    | /'
    failed+=("$t")
  fi
done

if ((${#failed[@]})); then
  echo "==> fuzz targets that failed: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
  exit 1
fi
echo "==> all ${#targets[@]} fuzz targets ran $seconds s without a crash"
