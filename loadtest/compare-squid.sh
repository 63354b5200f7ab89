#!/usr/bin/env bash
# Compares fetchgate with squid (and with no proxy at all, the machine's ceiling) on
# identical work from the fetchgate-loadtest harness, in one run: for every scenario the
# three targets run one after another (direct, squid, fetchgate), --rounds times, and one
# table with ratios is printed at the end (medians over rounds).
#
# squid is installed from Debian if missing (squid-openssl: Debian's plain `squid` is
# built with GnuTLS and has no ssl-bump) and started on loopback for each run with a
# config aimed at its best on this machine: a non-caching forward proxy, `workers` =
# number of cores, no access log, persistent connections both ways, and an ssl-bump port
# (its own CA made with openssl, certificate db initialised) for the HTTPS comparison.
# fetchgate is started by the harness for each run (fresh spool, its own CA).
#
# Usage: loadtest/compare-squid.sh [--fetchgate PATH] [--harness PATH] [--duration SECS]
#                                  [--rounds N] [--idle-connections N] [--only REGEX]
#                                  [--out DIR]
#   --fetchgate  fetchgate binary (default target/release/fetchgate)
#   --harness    fetchgate-loadtest binary (default target/release/fetchgate-loadtest,
#                built with `cargo build --release -p fetchgate-loadtest` if missing)
#   --duration   seconds per scenario and target (default 20)
#   --rounds     repetitions of every scenario, alternating targets (default 1)
#   --idle-connections  connections in the idle scenario (default 1000)
#   --only       run only the scenarios whose name matches this extended regex
#   --out        directory for the JSON results, squid's logs and the table (default: a
#                new directory under /tmp)
set -euo pipefail
cd "$(dirname "$0")/.."

fetchgate=target/release/fetchgate
harness=target/release/fetchgate-loadtest
duration=20
rounds=1
idle_connections=1000
only=""
out=""
while (($#)); do
  case "$1" in
    --fetchgate) fetchgate=$2; shift 2 ;;
    --harness) harness=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --idle-connections) idle_connections=$2; shift 2 ;;
    --only) only=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "compare-squid.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
  esac
done

[ -x "$fetchgate" ] || { echo "compare-squid.sh: no fetchgate binary at $fetchgate (cargo build --release, or --fetchgate PATH)" >&2; exit 2; }
if [ ! -x "$harness" ]; then
  echo "==> building the harness: cargo build --release -p fetchgate-loadtest"
  cargo build --release -p fetchgate-loadtest
fi
command -v python3 >/dev/null || { echo "compare-squid.sh: python3 is needed for the table" >&2; exit 2; }

# squid with ssl-bump support, and openssl for its CA.
if ! command -v squid >/dev/null || ! squid -v | grep -q -- '--with-openssl'; then
  echo "==> installing squid-openssl"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends squid-openssl openssl
  # The package starts the system-wide squid on port 3128; this comparison does not use it.
  $sudo invoke-rc.d squid stop >/dev/null 2>&1 || true
fi
certgen=/usr/lib/squid/security_file_certgen
[ -x "$certgen" ] || { echo "compare-squid.sh: $certgen is missing (squid-openssl)" >&2; exit 2; }

[ -n "$out" ] || out=$(mktemp -d /tmp/compare-squid.XXXXXX)
mkdir -p "$out/results"
out=$(cd "$out" && pwd)
cores=$(nproc)

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# The origin's CA, shared by every run, so squid can be told to trust it.
origin_ca_dir="$out/origin-ca"
origin_ca=$("$harness" origin-ca "$origin_ca_dir")

# squid's directory: config, CA, certificate db, logs; readable by its effective user.
sq="$out/squid"
mkdir -p "$sq"
openssl req -new -x509 -nodes -newkey rsa:2048 -sha256 -days 7 -subj "/CN=compare-squid ssl-bump CA" \
  -addext "keyUsage=critical,keyCertSign,cRLSign" \
  -keyout "$sq/squid-ca.key" -out "$sq/squid-ca.pem" 2>/dev/null
rm -rf "$sq/ssl_db"
"$certgen" -c -s "$sq/ssl_db" -M 64MB >/dev/null
cp "$origin_ca" "$sq/origin-ca.pem"
squid_port=$(free_port)
squid_bump_port=$(free_port)
cat > "$sq/squid.conf" <<EOF
# Non-caching forward proxy on loopback, tuned for throughput on $cores cores.
workers $cores
http_port 127.0.0.1:$squid_port
http_port 127.0.0.1:$squid_bump_port ssl-bump tls-cert=$sq/squid-ca.pem tls-key=$sq/squid-ca.key generate-host-certificates=on dynamic_cert_mem_cache_size=64MB
sslcrtd_program $certgen -s $sq/ssl_db -M 64MB
sslcrtd_children 8 startup=2 idle=2
acl step1 at_step SslBump1
ssl_bump peek step1
ssl_bump bump all
tls_outgoing_options cafile=$sq/origin-ca.pem
http_access allow localhost
http_access deny all
cache deny all
cache_mem 0 MB
# More read-ahead than the default 16 KB for the large-object scenarios; no ICMP helper.
read_ahead_gap 1 MB
pinger_enable off
memory_pools on
client_persistent_connections on
server_persistent_connections on
pconn_timeout 120 seconds
max_filedescriptors 65536
access_log none
cache_store_log none
cache_log $sq/cache.log
pid_filename $sq/squid.pid
coredump_dir $sq
visible_hostname compare-squid
via off
forwarded_for delete
shutdown_lifetime 1 seconds
EOF
# Started as root, squid runs as Debian's default effective user, proxy.
chmod 755 "$out" "$sq"
chown -R proxy "$sq"
squid -k parse -f "$sq/squid.conf" 2>"$sq/parse.log" || { cat "$sq/parse.log" >&2; exit 1; }

squid_pid=""
start_squid() {
  squid --foreground -f "$sq/squid.conf" >>"$sq/stdout.log" 2>&1 &
  squid_pid=$!
  for _ in $(seq 1 200); do
    if (exec 3<>/dev/tcp/127.0.0.1/"$squid_port") 2>/dev/null \
       && (exec 3<>/dev/tcp/127.0.0.1/"$squid_bump_port") 2>/dev/null; then
      sleep 0.5  # let every worker finish starting
      return 0
    fi
    kill -0 "$squid_pid" 2>/dev/null || break
    sleep 0.1
  done
  echo "compare-squid.sh: squid did not start; $sq/cache.log says:" >&2
  tail -20 "$sq/cache.log" >&2
  exit 1
}
stop_squid() {
  [ -n "$squid_pid" ] || return 0
  kill -TERM "$squid_pid" 2>/dev/null || true
  wait "$squid_pid" 2>/dev/null || true
  squid_pid=""
}
trap stop_squid EXIT
# squid's master, its workers and its helpers: every process below the master.
squid_pids() {
  local todo=("$squid_pid") all=() p
  while ((${#todo[@]})); do
    p=${todo[0]}; todo=("${todo[@]:1}")
    all+=("$p")
    for c in $(cat /proc/"$p"/task/*/children 2>/dev/null); do todo+=("$c"); done
  done
  local args=()
  for p in "${all[@]}"; do args+=(--proxy-pid "$p"); done
  echo "${args[@]}"
}

# scenario name | harness subcommand and its workload arguments ({bump} marks HTTPS)
scenarios=(
  "1KiB c64|run --object 1KiB -c 64 --requests-per-session 50"
  "1KiB c256|run --object 1KiB -c 256 --requests-per-session 50"
  "1KiB c1024|run --object 1KiB -c 1024 --requests-per-session 50"
  "10MiB c8|run --object 10MiB -c 8 --requests-per-session 4 --distinct 4"
  "100MiB single stream|run --object 100MiB -c 1 --requests-per-session 1 --distinct 1"
  "HTTPS 1KiB c64 intercepted|run --object 1KiB -c 64 --requests-per-session 50 --scheme https {bump}"
  "HTTPS 10MiB c8 intercepted|run --object 10MiB -c 8 --requests-per-session 4 --distinct 4 --scheme https {bump}"
  "HTTPS new TLS connection per request c64|run --object 1KiB -c 64 --requests-per-session 50 --scheme https --connection per-request {bump}"
  "idle keep-alive x$idle_connections|idle --connections $idle_connections"
  "idle intercepted TLS x$idle_connections|idle --connections $idle_connections --tls {bump}"
)

run_one() { # scenario-index round target
  local i=$1 round=$2 target=$3
  local name=${scenarios[$i]%%|*} spec=${scenarios[$i]#*|}
  local bump=0
  [[ $spec == *"{bump}"* ]] && bump=1
  spec=${spec/ \{bump\}/}
  local sub=${spec%% *} args=${spec#* }
  # squid mints a DNS-name SAN for an IP-literal CONNECT, which no client accepts: every
  # target gets the origin by name in the HTTPS scenarios, so the work stays identical.
  if ((bump)); then args+=" --origin-host localhost"; fi
  if [ "$sub" = idle ] && [ "$target" = direct ]; then return 0; fi
  if [ -n "$only" ] && ! grep -qE -- "$only" <<<"$name"; then return 0; fi
  local json="$out/results/s$i-r$round-$target.json"
  local common=(--origin-ca-dir "$origin_ca_dir" --label "$name / $target" --json "$json" --quiet)
  [ "$sub" = run ] && common+=(--duration "$duration")
  local tgt=()
  case "$target" in
    direct) tgt=(--target direct) ;;
    fetchgate) tgt=(--target spawn --fetchgate-bin "$fetchgate") ;;
    squid)
      start_squid
      if ((bump)); then
        tgt=(--target proxy --proxy "127.0.0.1:$squid_bump_port" --ca "$sq/squid-ca.pem")
      else
        tgt=(--target proxy --proxy "127.0.0.1:$squid_port")
      fi
      # shellcheck disable=SC2207
      tgt+=($(squid_pids))
      ;;
  esac
  echo "==> [$((round + 1))/$rounds] $name: $target"
  # shellcheck disable=SC2086
  if ! "$harness" "$sub" $args "${tgt[@]}" "${common[@]}" >"$out/results/s$i-r$round-$target.txt" 2>&1; then
    echo "    failed: $(tail -3 "$out/results/s$i-r$round-$target.txt")"
  fi
  [ "$target" = squid ] && stop_squid
  return 0
}

for i in "${!scenarios[@]}"; do
  for ((round = 0; round < rounds; round++)); do
    for target in direct squid fetchgate; do
      run_one "$i" "$round" "$target"
    done
  done
done

names=$(printf '%s\n' "${scenarios[@]}" | cut -d'|' -f1)
python3 - "$out/results" "$rounds" "$names" <<'EOF' | tee "$out/table.txt"
import json, os, statistics, sys
results, rounds, names = sys.argv[1], int(sys.argv[2]), sys.argv[3].splitlines()
def load(i, target):
    runs = []
    for r in range(rounds):
        p = os.path.join(results, f"s{i}-r{r}-{target}.json")
        if os.path.exists(p):
            with open(p) as f:
                runs.append(json.load(f))
    return runs
def med(runs, get):
    vals = [v for v in (get(r) for r in runs) if v is not None]
    return statistics.median(vals) if vals else None
def fmt(v, spec="{:.0f}"):
    return "-" if v is None else spec.format(v)
def ratio(a, b):
    return "-" if a is None or b in (None, 0) else f"{a / b:.2f}"
rows = []
head = ["scenario", "metric", "direct", "squid", "fetchgate", "fg/squid", "fg/direct"]
for i, name in enumerate(names):
    runs = {t: load(i, t) for t in ("direct", "squid", "fetchgate")}
    if not any(runs.values()):
        continue
    if name.startswith("idle"):
        get = lambda s: s.get("kib_per_connection")
        v = {t: med(r, get) for t, r in runs.items()}
        rows.append([name, "KiB/connection", "-", fmt(v["squid"], "{:.1f}"), fmt(v["fetchgate"], "{:.1f}"), ratio(v["fetchgate"], v["squid"]), "-"])
        get = lambda s: s.get("kib_per_added_connection")
        v = {t: med(r, get) for t, r in runs.items()}
        rows.append(["", "KiB/added connection", "-", fmt(v["squid"], "{:.1f}"), fmt(v["fetchgate"], "{:.1f}"), ratio(v["fetchgate"], v["squid"]), "-"])
        est = {t: med(r, lambda s: s.get("established")) for t, r in runs.items()}
        rows.append(["", "established", "-", fmt(est["squid"]), fmt(est["fetchgate"]), "", ""])
        continue
    metrics = [
        ("requests/s", lambda s: s["requests_per_s"], "{:.0f}"),
        ("MB/s", lambda s: s["mb_per_s"], "{:.1f}"),
        ("p50 ms", lambda s: s["latency_ms"]["p50"], "{:.2f}"),
        ("p99 ms", lambda s: s["latency_ms"]["p99"], "{:.2f}"),
        ("errors", lambda s: s["error_total"], "{:.0f}"),
        ("sessions/s", lambda s: s["sessions_per_s"], "{:.1f}"),
        ("report failures", lambda s: s["report_verification_failures"], "{:.0f}"),
        ("proxy CPU s", lambda s: (s.get("proxy") or {}).get("cpu_seconds"), "{:.1f}"),
        # With a connection per request (CONNECT + TLS each time), this is new
        # intercepted TLS connections per proxy CPU-second.
        ("requests per proxy CPU-s", lambda s: s["requests"] / c if (c := (s.get("proxy") or {}).get("cpu_seconds")) else None, "{:.0f}"),
        ("proxy peak RSS MiB", lambda s: ((s.get("proxy") or {}).get("peak_rss_kib") or 0) / 1024 or None, "{:.0f}"),
    ]
    for j, (label, get, spec) in enumerate(metrics):
        v = {t: med(r, get) for t, r in runs.items()}
        # Sessions and their reports exist only on fetchgate; without a control API a
        # "session" is just a batch of requests.
        if label.startswith(("sessions", "report")):
            v["direct"] = v["squid"] = None
        direct = "-" if label.startswith(("proxy", "report", "sessions", "requests per proxy")) else fmt(v["direct"], spec)
        ratios = label in ("requests/s", "MB/s", "p50 ms", "p99 ms", "proxy CPU s", "proxy peak RSS MiB", "requests per proxy CPU-s")
        rows.append([name if j == 0 else "", label, direct, fmt(v["squid"], spec), fmt(v["fetchgate"], spec),
                     ratio(v["fetchgate"], v["squid"]) if ratios else "",
                     ratio(v["fetchgate"], v["direct"]) if ratios and direct != "-" else ""])
widths = [max(len(str(r[k])) for r in rows + [head]) for k in range(len(head))]
line = lambda r: "  ".join(str(c).ljust(w) if k < 2 else str(c).rjust(w) for k, (c, w) in enumerate(zip(r, widths)))
print(line(head))
print("  ".join("-" * w for w in widths))
for r in rows:
    print(line(r))
EOF
echo "results: $out (JSON per run in results/, squid's logs in squid/)"
