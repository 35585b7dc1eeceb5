#!/usr/bin/env bash
# backstop pull against curl and aria2c in the same run, served by nginx on
# 127.0.0.1 with its own configuration and ports (never the system
# service), downloaded to tmpfs so that the disk does not hide the transfer
# (BENCH_DIR moves it).
#
#   bench/pull.sh                                   # 2 GiB, 2,000 files, 3 rounds
#   SIZE_MIB=512 FILES=200 RUNS=1 bench/pull.sh     # a quick run
#   CASES="throttled files" bench/pull.sh           # some cases only
#
# (1) free: one file (SIZE_MIB) straight from nginx; throughput against
#     curl, without and with --sha256.
# (2) cut: the same file through backstop-cutproxy (backstop-faultserver's
#     cutting Proxy as a process), which closes every connection once it has
#     carried CUT_MIB MiB towards the client. Bytes fetched in all (counted by
#     the proxy) against the file size, and time against the same client
#     through the proxy with no cut.
#     curl 7.88 (Debian 12) cannot resume within one run: --retry starts over
#     from byte 0 (Range resume in a run came with curl 8.17), so it runs the
#     way people run it, `until curl -C - ...; do :; done`. aria2c resumes by
#     itself (--max-tries=0 --retry-wait=0).
# (3) throttled: the same file from an nginx server with `limit_rate 64m`
#     (RATE_MIB) per connection, as CDNs throttle: `pull --streams 8`
#     against curl (one connection) and `aria2c -x8 -s8`.
# (4) files: FILES files of 50 KiB to 2 MiB (a Hub repository of shards
#     and configs): `pull --jobs 16 -i LIST` against `aria2c -j16 -i LIST`
#     and `curl --parallel --parallel-max 16`; the TCP connections each
#     client opened are counted from nginx's access log ($connection).
# Peak RSS of every client in (1), (3) and (4) is measured with
# /usr/bin/time (its %M, as -v prints it).
# Installs curl, aria2, nginx and time from Debian when missing. Times are
# medians of RUNS rounds, every client once per case in each round; bytes
# fetched are the most any round fetched, RSS the most any round took.
set -euo pipefail
cd "$(dirname "$0")/.."
size_mib=${SIZE_MIB:-2048}
cut_mib=${CUT_MIB:-256}
runs=${RUNS:-3}
files=${FILES:-2000}
rate_mib=${RATE_MIB:-64}
cases=" ${CASES:-free cut throttled files} "
has() { [[ $cases == *" $1 "* ]]; }

need() {
  command -v "$1" >/dev/null || [ -x "/usr/sbin/$1" ] || {
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
  }
}
need curl curl
need aria2c aria2
need nginx nginx
[ -x /usr/bin/time ] || need /usr/bin/time time
nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)

cargo build --release --quiet -p backstop -p backstop-faultserver
bin=$PWD/target/release/backstop
proxy_bin=$PWD/target/release/backstop-cutproxy

work=$(mktemp -d "${BENCH_DIR:-/dev/shm}/backstop-pull.XXXXXX")
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/root" "$work/out" "$work/nginx" "$work/many" "$work/many-out"
size=$((size_mib << 20))
echo "bench: writing a ${size_mib} MiB file" >&2
head -c "$size" /dev/urandom >"$work/root/big.bin"
sha=$(sha256sum "$work/root/big.bin" | cut -d' ' -f1)
if has files; then
  echo "bench: writing $files files of 50 KiB to 2 MiB" >&2
  # Sizes spread evenly over the range, in a shuffled order.
  python3 - "$work/many" "$files" <<'PY'
import os, sys, random
root, n = sys.argv[1], int(sys.argv[2])
lo, hi = 50 << 10, 2 << 20
rng = random.Random(16)
for i in range(n):
    size = lo + (hi - lo) * ((i * 7919) % n) // max(n - 1, 1)
    with open(os.path.join(root, f"f{i:05}.bin"), "wb") as f:
        f.write(rng.randbytes(size))
PY
  many_bytes=$(find "$work/many" -type f -printf '%s\n' | awk '{ s += $1 } END { print s }')
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
nginx_port=$(free_port)
cut_port=$(free_port)
plain_port=$(free_port)
slow_port=$(free_port)
many_port=$(free_port)
n=$work/nginx
cat >"$n/nginx.conf" <<CONF
daemon off;
master_process off;
worker_processes 1;
pid $n/nginx.pid;
error_log $n/error.log warn;
events { worker_connections 256; }
http {
  access_log off;
  log_format conn '\$connection \$connection_requests';
  client_body_temp_path $n/body; proxy_temp_path $n/proxy; fastcgi_temp_path $n/fastcgi;
  uwsgi_temp_path $n/uwsgi; scgi_temp_path $n/scgi;
  sendfile on;
  server { listen 127.0.0.1:$nginx_port; root $work/root; }
  server { listen 127.0.0.1:$slow_port; root $work/root; limit_rate ${rate_mib}m; }
  server { listen 127.0.0.1:$many_port; root $work/many; access_log $n/many.log conn; }
}
CONF
"$nginx_bin" -c "$n/nginx.conf" -p "$n" -e "$n/error.log" &
pids+=($!)
"$proxy_bin" "127.0.0.1:$cut_port" "127.0.0.1:$nginx_port" $((cut_mib << 20)) "$work/cut.stats" 2>/dev/null &
pids+=($!)
"$proxy_bin" "127.0.0.1:$plain_port" "127.0.0.1:$nginx_port" 0 "$work/plain.stats" 2>/dev/null &
pids+=($!)
for port in "$nginx_port" "$cut_port" "$plain_port" "$slow_port" "$many_port"; do
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.05
  done
done

out=$work/out/big.bin
fetch() { # CLIENT URL
  rm -f "$out" "$out.part" "$out.part.json" "$out.aria2"
  case $1 in
  backstop) $timer "$bin" -q pull "$2" --dir "$work/out" ;;
  backstop-sha256) $timer "$bin" -q pull "$2" --dir "$work/out" --sha256 "$sha" ;;
  curl) until curl -sS -C - -o "$out" "$2" 2>/dev/null; do :; done ;;
  aria2c) $timer aria2c -q -x1 -s1 --max-tries=0 --retry-wait=0 --file-allocation=none \
    --allow-overwrite=true --auto-file-renaming=false -d "$work/out" -o big.bin "$2" ;;
  backstop-streams8) $timer "$bin" -q pull "$2" --dir "$work/out" --streams 8 ;;
  curl-1) $timer curl -sS -o "$out" "$2" ;;
  aria2c-x8) $timer aria2c -q -x8 -s8 --file-allocation=none \
    --allow-overwrite=true --auto-file-renaming=false -d "$work/out" -o big.bin "$2" ;;
  esac
}
# Runs a client under /usr/bin/time, its peak RSS (KiB) into $rss_file.
rss_file=$work/rss
# fetch runs its client under it when $timer is `timed` (not the curl
# loop of the cut case, a shell).
timed() { /usr/bin/time -f %M -o "$rss_file" "$@"; }
timer=
stat_of() { sleep 0.3; cat "$1" 2>/dev/null || echo 0; }
# One timed fetch: appends "seconds bytes" to RESULT_FILE, and the
# client's peak RSS (KiB) to RESULT_FILE.rss when it ran under time.
once() { # CLIENT URL STATS_FILE RESULT_FILE [timed]
  local before after start end
  before=$(stat_of "$3")
  timer=${5:-}
  rm -f "$rss_file"
  start=$(date +%s.%N)
  fetch "$1" "$2"
  end=$(date +%s.%N)
  timer=
  after=$(stat_of "$3")
  [ "$(stat -c %s "$out")" = "$size" ] || { echo "bench: $1 produced a file of the wrong size" >&2; exit 1; }
  awk -v s="$start" -v e="$end" -v b="$((after - before))" 'BEGIN { printf "%.3f %d\n", e - s, b }' >>"$4"
  echo "bench: $(basename "$4"): $(tail -n 1 "$4" | cut -d' ' -f1) s" >&2
  [ ! -s "$rss_file" ] || cat "$rss_file" >>"$4.rss"
  rm -f "$out"
}

# (4): every file of the list into many-out, then the TCP connections
# the client opened (distinct $connection in nginx's log lines of the run).
many_list() { # FORMAT FILE
  local i
  for f in "$work/many"/*; do
    i=$(basename "$f")
    case $1 in
    backstop) echo "http://127.0.0.1:$many_port/$i" ;;
    aria2c) printf 'http://127.0.0.1:%s/%s\n  out=%s\n' "$many_port" "$i" "$i" ;;
    curl) printf 'url = "http://127.0.0.1:%s/%s"\n' "$many_port" "$i" ;;
    esac
  done >"$2"
}
once_many() { # CLIENT RESULT_FILE
  local start end lines
  rm -rf "$work/many-out" && mkdir -p "$work/many-out"
  lines=$(wc -l <"$n/many.log")
  rm -f "$rss_file"
  start=$(date +%s.%N)
  case $1 in
  backstop-jobs16) timed "$bin" -q pull --jobs 16 -i "$work/list.backstop" --dir "$work/many-out" ;;
  aria2c-j16) timed aria2c -q -j16 --file-allocation=none --allow-overwrite=true \
    --auto-file-renaming=false -d "$work/many-out" -i "$work/list.aria2c" ;;
  curl-parallel16) timed curl -sS --parallel --parallel-max 16 --remote-name-all \
    --output-dir "$work/many-out" -K "$work/list.curl" ;;
  esac
  end=$(date +%s.%N)
  local got
  got=$(find "$work/many-out" -path '*/.backstop' -prune -o -type f -printf '%s\n' | awk '{ s += $1; n++ } END { print n " " s }')
  [ "$got" = "$files $many_bytes" ] || { echo "bench: $1 fetched $got (files bytes), not $files $many_bytes" >&2; exit 1; }
  awk -v s="$start" -v e="$end" 'BEGIN { printf "%.3f\n", e - s }' >>"$2"
  echo "bench: $(basename "$2"): $(tail -n 1 "$2") s" >&2
  cat "$rss_file" >>"$2.rss"
  tail -n +"$((lines + 1))" "$n/many.log" | awk '{ print $1 }' | sort -u | wc -l >>"$2.conns"
}
median() { sort -n "$1" | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
most_bytes() { sort -n -k2 "$1" | tail -1 | awk '{ print $2 }'; }

# Rounds, each running every client once per case, so that whatever else
# the machine does weighs on every client alike. Each round starts each
# case with the next client of its list: the first fetch of a round has
# been seen to run up to twice as slow as the same client later in the
# round (after the previous round's 2,000 files), and no client should
# always be the one that pays for it.
rotated() { # ROUND CLIENT... : the clients, rotated by ROUND - 1
  local r=$(( ($1 - 1) % ($# - 1) )); shift
  echo "${@:r+1}" "${@:1:r}"
}
clients=(backstop backstop-sha256 curl aria2c)
slow_clients=(backstop-streams8 curl-1 aria2c-x8)
many_clients=(backstop-jobs16 aria2c-j16 curl-parallel16)
if has files; then
  for c in backstop aria2c curl; do many_list "$c" "$work/list.$c"; done
fi
for round in $(seq "$runs"); do
  echo "bench: round $round of $runs" >&2
  for c in $(rotated "$round" "${clients[@]}"); do
    if has free; then
      once "$c" "http://127.0.0.1:$nginx_port/big.bin" /dev/null "$work/$c.free" timed
    fi
    if has cut; then
      once "$c" "http://127.0.0.1:$plain_port/big.bin" "$work/plain.stats" "$work/$c.plain"
      once "$c" "http://127.0.0.1:$cut_port/big.bin" "$work/cut.stats" "$work/$c.cut"
    fi
  done
  if has throttled; then
    for c in $(rotated "$round" "${slow_clients[@]}"); do
      once "$c" "http://127.0.0.1:$slow_port/big.bin" /dev/null "$work/$c.slow" timed
    done
  fi
  if has files; then
    for c in $(rotated "$round" "${many_clients[@]}"); do once_many "$c" "$work/$c.many"; done
  fi
done
if has cut; then
  for c in "${clients[@]}"; do
    fetch "$c" "http://127.0.0.1:$cut_port/big.bin"
    [ "$(sha256sum "$out" | cut -d' ' -f1)" = "$sha" ] || { echo "bench: $c produced other bytes" >&2; exit 1; }
  done
fi

gibs() { awk -v b="$size" -v t="$1" 'BEGIN { printf "%.2f", b / t / 1073741824 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
most() { sort -n "$1" | tail -1; }
mib() { awk -v k="$(most "$1")" 'BEGIN { printf "%.0f MiB", k / 1024 }'; }
echo
echo "Load average at the end: $(cut -d' ' -f1-3 /proc/loadavg); medians of $runs rounds"
if has free || has cut; then
  declare -A free plain cut bytes
  for c in "${clients[@]}"; do
    if has free; then free[$c]=$(median "$work/$c.free"); fi
    if has cut; then
      plain[$c]=$(median "$work/$c.plain")
      cut[$c]=$(median "$work/$c.cut")
      bytes[$c]=$(most_bytes "$work/$c.cut")
    fi
  done
  echo
  echo "${size_mib} MiB from nginx on loopback, cut every ${cut_mib} MiB in (2)"
  echo
  echo "| client | (1) fault-free | throughput ÷ curl's | peak RSS | through the proxy, no cut | (2) cut every ${cut_mib} MiB | bytes fetched ÷ size | time ÷ no-cut time |"
  echo "|---|---|---|---|---|---|---|---|"
  for c in "${clients[@]}"; do
    if has free; then
      f="${free[$c]} s ($(gibs "${free[$c]}") GiB/s) | $(ratio "${free[curl]}" "${free[$c]}")×"
      r=$([ -s "$work/$c.free.rss" ] && mib "$work/$c.free.rss" || echo "(a shell loop)")
    else f="- | -"; r=-; fi
    if has cut; then
      k="${plain[$c]} s | ${cut[$c]} s | $(ratio "${bytes[$c]}" "$size") | $(ratio "${cut[$c]}" "${plain[$c]}")×"
    else k="- | - | - | -"; fi
    echo "| $c | $f | $r | $k |"
  done
fi
if has throttled; then
  declare -A slow
  for c in "${slow_clients[@]}"; do slow[$c]=$(median "$work/$c.slow"); done
  echo
  echo "(3) ${size_mib} MiB from nginx with limit_rate ${rate_mib}m per connection"
  echo
  echo "| client | time | throughput | ÷ curl's | ÷ aria2c -x8's | peak RSS |"
  echo "|---|---|---|---|---|---|"
  for c in "${slow_clients[@]}"; do
    echo "| $c | ${slow[$c]} s | $(gibs "${slow[$c]}") GiB/s | $(ratio "${slow[curl-1]}" "${slow[$c]}")× | $(ratio "${slow[aria2c-x8]}" "${slow[$c]}")× | $(mib "$work/$c.slow.rss") |"
  done
fi
if has files; then
  declare -A many
  for c in "${many_clients[@]}"; do many[$c]=$(median "$work/$c.many"); done
  echo
  echo "(4) $files files of 50 KiB to 2 MiB ($((many_bytes >> 20)) MiB in all) from nginx"
  echo
  echo "| client | time | files/s | ÷ aria2c -j16's | ÷ curl --parallel's | TCP connections | peak RSS |"
  echo "|---|---|---|---|---|---|---|"
  for c in "${many_clients[@]}"; do
    echo "| $c | ${many[$c]} s | $(awk -v n="$files" -v t="${many[$c]}" 'BEGIN { printf "%.0f", n / t }') | $(ratio "${many[aria2c-j16]}" "${many[$c]}")× | $(ratio "${many[curl-parallel16]}" "${many[$c]}")× | $(most "$work/$c.many.conns") | $(mib "$work/$c.many.rss") |"
  done
fi
