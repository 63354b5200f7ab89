#!/usr/bin/env bash
# Assembles the snap without snapcraft: the same tree snapcraft makes from
# snapcraft.yaml (the binary, the wrappers in bin/, meta/hooks/configure and
# meta/snap.yaml generated from snapcraft.yaml), packed the way snapd's own packer
# (`snap pack`) packs an app snap. Prints the .snap's path on stdout.
#
#   packaging/snap/build-snap.sh BINARY OUTPUT_DIR
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
[ $# -eq 2 ] || { echo "usage: $0 BINARY OUTPUT_DIR" >&2; exit 1; }
binary=$1
out=$2
[ -x "$binary" ] || { echo "ERROR: $binary is not an executable (build fetchgate first)" >&2; exit 1; }
mkdir -p "$out"
out=$(cd "$out" && pwd)

tree=$(mktemp -d)
trap 'rm -rf "$tree"' EXIT
# mktemp makes it 0700; snapd refuses a snap whose root is not world-readable.
chmod 0755 "$tree"
install -d -m 0755 "$tree/bin" "$tree/meta/hooks"
# snapcraft strips what its rust plugin builds; so does this.
strip --strip-debug -o "$tree/bin/fetchgate" "$binary"
chmod 0755 "$tree/bin/fetchgate"
install -m 0755 "$here/bin/fetchgate-daemon" "$here/bin/fetchgate-ctl" "$tree/bin/"
install -m 0755 "$here/hooks/configure" "$tree/meta/hooks/configure"

# meta/snap.yaml: snapcraft.yaml without what only the build uses, with the
# architectures the snap is built for.
python3 - "$here/snapcraft.yaml" "$tree/meta/snap.yaml" <<'PY'
import sys
import yaml

with open(sys.argv[1]) as f:
    project = yaml.safe_load(f)
build_only = {"parts", "build-packages", "build-snaps", "adopt-info", "architectures"}
meta = {k: v for k, v in project.items() if k not in build_only}
meta["architectures"] = sorted(
    {a for entry in project.get("architectures", []) for a in entry["build-for"]}
) or ["amd64"]
with open(sys.argv[2], "w") as f:
    yaml.safe_dump(meta, f, sort_keys=False, default_flow_style=False)
PY
chmod 0644 "$tree/meta/snap.yaml"

read -r name version arch < <(python3 - "$tree/meta/snap.yaml" <<'PY'
import sys
import yaml

with open(sys.argv[1]) as f:
    meta = yaml.safe_load(f)
print(meta["name"], meta["version"], meta["architectures"][0])
PY
)
snap="$out/${name}_${version}_${arch}.snap"
# Exactly snapd's options for an app snap (snap/squashfs/squashfs.go, Build), run from
# inside the tree as snapd does.
(cd "$tree" && mksquashfs . "$snap" -noappend -comp xz -no-fragments -no-progress -all-root -no-xattrs >/dev/null)
echo "$snap"
