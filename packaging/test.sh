#!/usr/bin/env bash
# Builds the .deb and the .snap (packaging/build.sh) and checks them the way an
# administrator meets them:
#   deb:  lintian; dpkg -i; owner and mode of every installed path; the unit verifies;
#         the installed binary started as the unit starts it (service user, unit
#         arguments, environment file; systemd itself does not run here); a session
#         lifecycle with `fetchgate ctl`; dpkg -r keeps the data, reinstalling reuses
#         it, dpkg -P removes it.
#   snap: the squashfs tree; snapd's `snap pack --check-skeleton`; meta/snap.yaml; the configure hook (with a fake snapctl)
#         writes what the daemon wrapper reads; the unpacked daemon picks the snap paths.
# Needs root (dpkg -i). Refuses to run where a fetchgate package is already installed.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { echo "==> packaging: $*"; }
fail() {
  echo "FAIL: $*" >&2
  exit 1
}

[ "$(id -u)" -eq 0 ] || fail "run as root: the test installs the .deb"
if dpkg-query -W -f='${Status}' fetchgate 2>/dev/null | grep -q 'ok installed\|config-files'; then
  fail "a fetchgate package is already on this machine; not replacing it"
fi

work=$(mktemp -d)
daemon_pid=""
we_installed=""
cleanup() {
  if [ -n "$daemon_pid" ]; then
    kill "$daemon_pid" 2>/dev/null || true
    wait "$daemon_pid" 2>/dev/null || true
  fi
  if [ -n "$we_installed" ]; then
    dpkg -P fetchgate >/dev/null 2>&1 || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

# Two loopback ports nobody listens on, below the ephemeral range.
free_ports() {
  python3 - "$1" <<'PY'
import random, socket, sys
found = []
while len(found) < int(sys.argv[1]):
    port = random.randint(20000, 32000)
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
    except OSError:
        continue
    finally:
        s.close()
    if port not in found:
        found.append(port)
print(" ".join(map(str, found)))
PY
}

# Waits for GET /status on a control port while the process lives.
wait_ready() { # port pid log
  for _ in $(seq 1 300); do
    if curl -sf --noproxy '*' "http://127.0.0.1:$1/status" | grep -q uptime; then
      return 0
    fi
    kill -0 "$2" 2>/dev/null || fail "the daemon exited before it was ready: $(cat "$3")"
    sleep 0.1
  done
  fail "the daemon was not ready after 30 s: $(cat "$3")"
}

# Stops the daemon with SIGTERM and expects status 0.
stop_daemon() {
  kill -TERM "$daemon_pid"
  local status=0
  wait "$daemon_pid" || status=$?
  daemon_pid=""
  [ "$status" -eq 0 ] || fail "the daemon exited with $status on SIGTERM"
}

# Asserts "owner group octal-mode" of a path.
expect_stat() { # path "user group mode"
  local got
  got=$(stat -c '%U %G %a' "$1") || fail "$1 is missing"
  [ "$got" = "$2" ] || fail "$1: expected $2, got $got"
}

step "building the packages"
packaging/build.sh "$work/out" >"$work/built"
mapfile -t built <"$work/built"
deb=${built[0]}
snap=${built[1]}
if [ ! -f "$deb" ] || [ ! -f "$snap" ]; then fail "build.sh printed '${built[*]}'"; fi

step "lintian $(basename "$deb")"
lintian --fail-on error,warning --tag-display-limit 0 "$deb" ||
  fail "lintian found problems (see above)"

step "dpkg -i"
we_installed=1
dpkg -i "$deb" >/dev/null

step "owners and modes of every installed path"
getent passwd fetchgate >/dev/null || fail "postinst did not create the fetchgate user"
IFS=: read -r _ _ uid _ _ home shell < <(getent passwd fetchgate)
[ "$uid" -lt 1000 ] || fail "fetchgate is not a system user (uid $uid)"
[ "$home" = /var/lib/fetchgate ] || fail "fetchgate's home is $home"
case $shell in */nologin | */false) ;; *) fail "fetchgate has a login shell: $shell" ;; esac
while read -r path; do
  case $path in
    /usr/bin/fetchgate) expect_stat "$path" "root root 755" ;;
    /etc/default/fetchgate) expect_stat "$path" "root root 600" ;;
    *)
      if [ -d "$path" ]; then
        expect_stat "$path" "root root 755"
      else
        expect_stat "$path" "root root 644"
      fi
      ;;
  esac
done < <(dpkg -L fetchgate | grep -v '^/\.$')
for path in /usr/bin/fetchgate /etc/fetchgate/fetchgate.toml /etc/default/fetchgate \
  /usr/lib/systemd/system/fetchgate.service /usr/share/doc/fetchgate/copyright; do
  dpkg -L fetchgate | grep -qx "$path" || fail "$path is not in the package"
done
expect_stat /var/lib/fetchgate "fetchgate fetchgate 750"
expect_stat /var/log/fetchgate "fetchgate fetchgate 750"
[ -z "$(ls -A /var/lib/fetchgate)" ] || fail "the spool is not empty before the first start"
grep -qx /etc/fetchgate/fetchgate.toml /var/lib/dpkg/info/fetchgate.conffiles ||
  fail "fetchgate.toml is not a conffile"
grep -qx /etc/default/fetchgate /var/lib/dpkg/info/fetchgate.conffiles ||
  fail "/etc/default/fetchgate is not a conffile"

unit=/usr/lib/systemd/system/fetchgate.service
step "systemd-analyze verify $unit"
systemd-analyze verify "$unit"
for setting in User=fetchgate ProtectSystem=strict NoNewPrivileges=yes StateDirectory=fetchgate \
  EnvironmentFile=-/etc/default/fetchgate CapabilityBoundingSet=; do
  grep -qx "$setting" "$unit" || fail "$unit lacks $setting"
done

step "starting /usr/bin/fetchgate as the unit does"
read -r proxy_port control_port < <(free_ports 2)
cat >>/etc/default/fetchgate <<EOF
FETCH_SERVICE_AUTH=ops:deb-secret
FETCHGATE_OPTS="--bind=127.0.0.1 --proxy-port=$proxy_port --control-port=$control_port"
EOF
exec_start=$(sed -n 's/^ExecStart=//p' "$unit")
umask_value=$(sed -n 's/^UMask=//p' "$unit")
# systemd's EnvironmentFile= and $VAR splitting, then User=/Group= without a PAM
# session (setpriv, like systemd), in an environment holding only the file's variables.
(
  set -a
  # shellcheck disable=SC1091
  . /etc/default/fetchgate
  set +a
  argv=()
  eval "argv=($exec_start)"
  umask "$umask_value"
  exec env -i FETCH_SERVICE_AUTH="$FETCH_SERVICE_AUTH" \
    setpriv --reuid=fetchgate --regid=fetchgate --init-groups -- "${argv[@]}"
) >"$work/deb-daemon.log" 2>&1 &
daemon_pid=$!
wait_ready "$control_port" "$daemon_pid" "$work/deb-daemon.log"

ctl() { /usr/bin/fetchgate ctl --url "http://127.0.0.1:$control_port" "$@"; }
export FETCH_SERVICE_AUTH=ops:deb-secret

step "a session lifecycle with fetchgate ctl"
created=$(ctl --json create --timeout 900 --owner packaging)
id=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])' <<<"$created")
token=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])' <<<"$created")
ctl list --state active | grep -q "^$id  packaging  active  strict " || fail "ctl list does not show $id active: $(ctl list --state active)"
ctl revoke "$id" --token "$token" | grep -q "^session-id  $id$" || fail "ctl revoke"
ctl show "$id" | grep -q "^artifacts: 0$" || fail "ctl show"
ctl end "$id" | grep -q "^state       ended$" || fail "ctl end"
ctl delete-resources "$id" | grep -q "deleted" || fail "ctl delete-resources"
ctl --json show --final "$id" | python3 -c 'import json,sys; assert json.load(sys.stdin)["session-id"] == sys.argv[1]' "$id"
if FETCH_SERVICE_AUTH=ops:wrong ctl list >/dev/null 2>"$work/denied.txt"; then
  fail "wrong credentials were accepted"
fi
grep -q 401 "$work/denied.txt" || fail "wrong credentials: $(cat "$work/denied.txt")"

step "files the daemon made belong to the service user"
expect_stat /var/lib/fetchgate/ca "fetchgate fetchgate 750"
expect_stat /var/lib/fetchgate/ca/fetchgate-ca.key.pem "fetchgate fetchgate 600"
[ "$(find /var/lib/fetchgate /var/log/fetchgate ! -user fetchgate | wc -l)" -eq 0 ] ||
  fail "files not owned by fetchgate: $(find /var/lib/fetchgate /var/log/fetchgate ! -user fetchgate)"
# The CA certificate is public on purpose (builders must trust it); nothing else is.
others=$(find /var/lib/fetchgate /var/log/fetchgate -perm /o=rwx ! -path /var/lib/fetchgate/ca/fetchgate-ca.pem)
[ -z "$others" ] || fail "files open to others despite UMask: $others"
python3 - /var/log/fetchgate/security.log <<'PY' || fail "security log"
import json, sys
events = [json.loads(line) for line in open(sys.argv[1])]
assert any(e["fields"].get("event") == "control-auth-failure" for e in events), events
PY
stop_daemon
ca_before=$(sha256sum /var/lib/fetchgate/ca/*.pem | sha256sum)

step "dpkg -r keeps the data; reinstalling reuses it"
dpkg -r fetchgate >/dev/null
[ ! -e /usr/bin/fetchgate ] || fail "dpkg -r left the binary"
[ -d /var/lib/fetchgate/db ] || fail "dpkg -r removed the database"
[ -f /etc/default/fetchgate ] || fail "dpkg -r removed a conffile"
dpkg -i "$deb" >/dev/null
[ "$(sha256sum /var/lib/fetchgate/ca/*.pem | sha256sum)" = "$ca_before" ] ||
  fail "the CA changed across remove and reinstall"
grep -q "deb-secret" /etc/default/fetchgate || fail "reinstalling replaced the edited environment file"

step "dpkg -P removes the data"
dpkg -P fetchgate >/dev/null
we_installed=""
for path in /var/lib/fetchgate /var/log/fetchgate /etc/fetchgate /etc/default/fetchgate /usr/bin/fetchgate; do
  [ ! -e "$path" ] || fail "dpkg -P left $path"
done

step "the snap's tree: $(basename "$snap")"
unsquashfs -l "$snap" | sed -n 's|^squashfs-root||p' | sort >"$work/snap-tree"
cat >"$work/snap-expected" <<'EOF'

/bin
/bin/fetchgate
/bin/fetchgate-ctl
/bin/fetchgate-daemon
/meta
/meta/hooks
/meta/hooks/configure
/meta/snap.yaml
EOF
diff -u "$work/snap-expected" "$work/snap-tree" || fail "unexpected snap tree"
root="$work/snap-root"
unsquashfs -q -d "$root" "$snap" >/dev/null
for f in bin/fetchgate bin/fetchgate-ctl bin/fetchgate-daemon meta/hooks/configure; do
  expect_stat "$root/$f" "root root 755"
done
expect_stat "$root/meta/snap.yaml" "root root 644"
expect_stat "$root" "root root 755"

step "snap pack --check-skeleton (snapd's own validation, from Debian's snapd .deb, not installed)"
mkdir -p "$work/snapd"
(cd "$work/snapd" && apt-get download -q snapd >/dev/null 2>&1) ||
  fail "cannot download the snapd package (apt-get download snapd)"
dpkg-deb -x "$work"/snapd/snapd_*.deb "$work/snapd/x"
# It exits 0 on some problems: any output is a failure.
if ! skeleton=$("$work/snapd/x/usr/bin/snap" pack --check-skeleton "$root" 2>&1) || [ -n "$skeleton" ]; then
  fail "snap pack --check-skeleton: $skeleton"
fi

deb_version=$(dpkg-deb -f "$deb" Version)
python3 - "$root/meta/snap.yaml" "${deb_version%-*}" <<'PY' || fail "meta/snap.yaml"
import sys
import yaml
meta = yaml.safe_load(open(sys.argv[1]))
assert meta["name"] == "fetchgate", meta
assert str(meta["version"]) == sys.argv[2], f"snap version {meta['version']} != package version {sys.argv[2]}"
assert meta["base"] == "core24" and meta["confinement"] == "strict", meta
assert "parts" not in meta, "build-only keys leaked into snap.yaml"
daemon = meta["apps"]["fetchgate"]
assert daemon["daemon"] == "simple" and daemon["command"] == "bin/fetchgate-daemon", daemon
assert set(daemon["plugs"]) == {"network", "network-bind"}, daemon
assert meta["apps"]["ctl"]["command"] == "bin/fetchgate-ctl", meta["apps"]
assert "configure" in meta["hooks"], meta
assert meta["architectures"] == ["amd64"], meta
PY

step "the configure hook with a fake snapctl"
snap_data="$work/var-snap/current"
snap_common="$work/var-snap/common"
fakebin="$work/fakebin"
mkdir -p "$fakebin" "$work/snapctl-values"
cat >"$fakebin/snapctl" <<EOF
#!/bin/sh
# A stand-in for snapd's snapctl: values from files, service calls logged.
case \$1 in
  get) cat "$work/snapctl-values/\$2" 2>/dev/null || true ;;
  services) echo "Service  Startup  Current  Notes"; echo "\$2  enabled  \${FAKE_SERVICE_STATE:-inactive}  -" ;;
  restart) echo "restart \$2" >>"$work/snapctl-calls" ;;
  *) echo "fake snapctl: unexpected \$*" >&2; exit 1 ;;
esac
EOF
chmod 755 "$fakebin/snapctl"
snap_set() { printf '%s' "$2" >"$work/snapctl-values/$1"; }
snap_env=(env -i "PATH=$fakebin:/usr/sbin:/usr/bin:/sbin:/bin" "SNAP=$root" "SNAP_DATA=$snap_data"
  "SNAP_COMMON=$snap_common" SNAP_INSTANCE_NAME=fetchgate)
run_hook() { "${snap_env[@]}" "$@" "$root/meta/hooks/configure"; }

snap_set proxy.port abc
if run_hook 2>"$work/hook.err"; then fail "the hook accepted proxy.port=abc"; fi
grep -q "proxy.port" "$work/hook.err" || fail "the hook's error does not name the key: $(cat "$work/hook.err")"
read -r proxy_port control_port < <(free_ports 2)
snap_set proxy.port "$proxy_port"
snap_set control.port "$control_port"
snap_set control.auth "snapops:it's-secret"
snap_set permissive true
snap_set verbosity debug
snap_set log.file log/fetchgate.log
snap_set upstream-proxy.http http://127.0.0.1:9/
snap_set upstream-proxy.bypass localhost,127.0.0.1
run_hook
expect_stat "$snap_data/conf/daemon.env" "root root 600"
[ ! -e "$work/snapctl-calls" ] || fail "the hook restarted a stopped daemon"
run_hook FAKE_SERVICE_STATE=active
grep -qx "restart fetchgate.fetchgate" "$work/snapctl-calls" || fail "the hook did not restart the running daemon"

step "the snap's daemon reads what the hook wrote and uses the snap paths"
printf '[sessions]\ndefault-timeout = 1234\n' >"$snap_data/conf/fetchgate.toml"
"${snap_env[@]}" "$root/bin/fetchgate-daemon" >"$work/snap-daemon.out" 2>&1 &
daemon_pid=$!
wait_ready "$control_port" "$daemon_pid" "$work/snap-daemon.out"
snapctl_run() { "${snap_env[@]}" "$root/bin/fetchgate-ctl" "$@"; }
# Port and credentials come from the hook's file, through the ctl wrapper.
snapctl_run --json create --policy permissive >/dev/null || fail "a permissive session (permissive=true)"
snapctl_run list | grep -q " active  permissive  .* 1234 " ||
  fail "config from \$SNAP_DATA/conf not applied: $(snapctl_run list)"
[ -f "$snap_common/spool/ca/fetchgate-ca.key.pem" ] || fail "no CA under \$SNAP_COMMON/spool"
[ -d "$snap_common/spool/db" ] || fail "no database under \$SNAP_COMMON/spool"
grep -q "started" "$snap_common/log/fetchgate.log" || fail "log.file not used"
# The wrapper execs the daemon: its command line shows what the hook's values became.
tr '\0' ' ' <"/proc/$daemon_pid/cmdline" | grep -q -- "--verbosity=debug" ||
  fail "verbosity=debug not passed: $(tr '\0' ' ' <"/proc/$daemon_pid/cmdline")"
tr '\0' '\n' <"/proc/$daemon_pid/environ" | grep -qx "NO_PROXY=localhost,127.0.0.1" ||
  fail "upstream-proxy.bypass not passed as NO_PROXY"
if tr '\0' '\n' <"/proc/$daemon_pid/environ" | grep -q "^HTTPS_PROXY="; then
  fail "an unset upstream-proxy.https reached the daemon as an empty HTTPS_PROXY"
fi
[ ! -s "$work/snap-daemon.out" ] || fail "the daemon wrote to stdout/stderr with a log file: $(cat "$work/snap-daemon.out")"
stop_daemon

step "all packaging checks passed"
