#!/usr/bin/env bash
# Runs fetchgate's whole test suite on a fresh Debian/Ubuntu machine: installs the
# system packages the build and the tests need (as root, or through sudo), then checks
# formatting and lints and runs every test, including the integration tests that start
# the real binary, a smoke run of each benchmark and a short run of each fuzz target.
set -euo pipefail
cd "$(dirname "$0")/.."

# clang/libclang: RocksDB's bindings; cmake: Pingora's zlib-ng; openssl: the tests
# make CAs the way craft-application does; curl and python3: a real client and local
# origin servers for the proxy tests; git: its http-backend serves a repository to clone;
# tinyproxy-bin: the upstream (corporate) proxy of the HTTP_PROXY tests, binary only (the
# tinyproxy package would also start a system service); xz-utils and gzip: the debtags
# tests compress their Packages fixtures; redis-server and haproxy: the HA pair tests
# start their own (the packaged services are not used); lintian, dpkg-dev, binutils,
# adduser, systemd (for systemd-analyze only; it does not run), squashfs-tools and
# python3-yaml: building and checking the .deb and the .snap (packaging/test.sh);
# dpkg-dev (dpkg-scanpackages), gnupg, gpgv and apt: the inspector tests build, sign and
# fetch a local apt repository; python3-pip, npm and golang-go: the pip, npm and Go
# inspector tests run the real clients (cargo comes with the toolchain).
packages=(clang libclang-dev cmake openssl pkg-config curl python3 python3-pip git ca-certificates tinyproxy-bin xz-utils gzip
  redis-server haproxy lintian dpkg-dev binutils adduser systemd squashfs-tools python3-yaml gnupg gpgv apt
  golang-go)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
# Debian's npm, unless a nodejs that bundles npm (NodeSource's) is installed already.
command -v npm >/dev/null || missing+=(npm)
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
if ((${#missing[@]})); then
  echo "==> installing ${missing[*]}"
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# The go command sends nothing for localhost or a loopback address through a proxy, and
# module paths carry no port: tests/inspect_go.rs serves go.fetchgate.test on port 443
# of this loopback address.
if ! grep -q '^127\.0\.0\.77[[:space:]]\+go\.fetchgate\.test' /etc/hosts; then
  echo "==> mapping go.fetchgate.test to 127.0.0.77 in /etc/hosts"
  echo "127.0.0.77 go.fetchgate.test" | $sudo tee -a /etc/hosts >/dev/null
fi

echo "==> cargo fmt --check"
cargo fmt --all -- --check
cargo fmt --manifest-path fuzz/Cargo.toml -- --check
# Note: clippy's check build and the test build each run RocksDB's C++ build script
# on a cold machine; a cold run took about 30 minutes here (2 cores).
echo "==> cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "==> cargo test"
cargo test --workspace --all-targets --locked
# Every parser of untrusted bytes (fetchgate-formats) under libFuzzer and the address
# sanitizer, 30 s per target; fuzz/run-all.sh without an argument runs 5 minutes each.
# It builds only fetchgate-formats and its pure-Rust dependencies (fuzz/target), never
# RocksDB or Pingora.
echo "==> fuzz/run-all.sh 30"
fuzz/run-all.sh 30
# Packages the binary the tests just built (no second profile), installs and checks them.
echo "==> packaging/test.sh"
if [ "$(id -u)" -eq 0 ]; then
  packaging/test.sh
else
  sudo --preserve-env=PATH,CARGO_HOME,RUSTUP_HOME packaging/test.sh
fi
