#!/usr/bin/env bash
# Builds the Debian package and the snap in one go from the binary of the profile the
# test suite builds (`cargo test` = dev profile): CI never compiles RocksDB a second
# time for a release profile. Prints the paths of both packages on stdout.
#
#   packaging/build.sh [OUTPUT_DIR]      (default: target/packages)
#
# Needs cargo-deb (installed here, pinned, when missing), dpkg-dev, binutils (strip),
# python3-yaml and squashfs-tools.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-target/packages}
# Pinned: cargo-deb warns that the dev profile will stop being accepted one day.
cargo_deb_version=3.8.0

step() { echo "==> $*" >&2; }

if [ "$(cargo deb --version 2>/dev/null)" != "cargo-deb $cargo_deb_version" ]; then
  step "installing cargo-deb $cargo_deb_version"
  cargo install cargo-deb --version "$cargo_deb_version" --locked >&2
fi

step "building target/debug/fetchgate (the test suite's build; a no-op after cargo test)"
cargo test --workspace --all-targets --locked --no-run >&2
mkdir -p "$out"

step "building the .deb (cargo-deb --no-build --profile dev)"
# cargo-deb strips the binary into the package; --quiet hides its warning that the dev
# profile is meant for testing (which is what this package is built for in CI).
deb=$(cargo deb --no-build --profile dev --locked --quiet --output "$out" | tail -n 1)
[ -f "$deb" ] || { echo "ERROR: cargo-deb produced no package (got: $deb)" >&2; exit 1; }

step "building the .snap"
snap=$(packaging/snap/build-snap.sh target/debug/fetchgate "$out")

step "done"
echo "$deb"
echo "$snap"
