#!/usr/bin/env bash
# backstop pull against curl and aria2c in the same run: one file (2 GiB)
# served by nginx on 127.0.0.1 with its own configuration and port (never
# the system service), downloaded to tmpfs so that the disk does not hide
# the transfer (BENCH_DIR moves it).
#
#   bench/pull.sh                          # 2 GiB, cut every 256 MiB, 5 rounds
#   SIZE_MIB=512 RUNS=1 bench/pull.sh
#
# (1) fault-free: each client straight from nginx; throughput against curl.
# (2) cut: the same file through backstop-cutproxy (backstop-faultserver's
#     cutting Proxy as a process), which closes every connection once it has
#     carried CUT_MIB MiB towards the client. Bytes fetched in all (counted by
#     the proxy) against the file size, and time against the same client
#     through the proxy with no cut.
#     curl 7.88 (Debian 12) cannot resume within one run: --retry starts over
#     from byte 0 (Range resume in a run came with curl 8.17), so it runs the
#     way people run it, `until curl -C - ...; do :; done`. aria2c resumes by
#     itself (--max-tries=0 --retry-wait=0).
# Installs curl, aria2 and nginx from Debian when missing. Times are medians
# of RUNS rounds; bytes fetched are the most any round fetched.
set -euo pipefail
cd "$(dirname "$0")/.."
size_mib=${SIZE_MIB:-2048}
cut_mib=${CUT_MIB:-256}
runs=${RUNS:-5}

need() {
  command -v "$1" >/dev/null || [ -x "/usr/sbin/$1" ] || {
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
  }
}
need curl curl
need aria2c aria2
need nginx nginx
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
mkdir -p "$work/root" "$work/out" "$work/nginx"
size=$((size_mib << 20))
echo "bench: writing a ${size_mib} MiB file" >&2
head -c "$size" /dev/urandom >"$work/root/big.bin"
sha=$(sha256sum "$work/root/big.bin" | cut -d' ' -f1)

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
nginx_port=$(free_port)
cut_port=$(free_port)
plain_port=$(free_port)
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
  client_body_temp_path $n/body; proxy_temp_path $n/proxy; fastcgi_temp_path $n/fastcgi;
  uwsgi_temp_path $n/uwsgi; scgi_temp_path $n/scgi;
  sendfile on;
  server { listen 127.0.0.1:$nginx_port; root $work/root; }
}
CONF
"$nginx_bin" -c "$n/nginx.conf" -p "$n" -e "$n/error.log" &
pids+=($!)
"$proxy_bin" "127.0.0.1:$cut_port" "127.0.0.1:$nginx_port" $((cut_mib << 20)) "$work/cut.stats" 2>/dev/null &
pids+=($!)
"$proxy_bin" "127.0.0.1:$plain_port" "127.0.0.1:$nginx_port" 0 "$work/plain.stats" 2>/dev/null &
pids+=($!)
for port in "$nginx_port" "$cut_port" "$plain_port"; do
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.05
  done
done

out=$work/out/big.bin
fetch() { # CLIENT URL
  rm -f "$out" "$out.part" "$out.part.json" "$out.aria2"
  case $1 in
  backstop) "$bin" -q pull "$2" --dir "$work/out" ;;
  backstop-sha256) "$bin" -q pull "$2" --dir "$work/out" --sha256 "$sha" ;;
  curl) until curl -sS -C - -o "$out" "$2" 2>/dev/null; do :; done ;;
  aria2c) aria2c -q -x1 -s1 --max-tries=0 --retry-wait=0 --file-allocation=none \
    --allow-overwrite=true --auto-file-renaming=false -d "$work/out" -o big.bin "$2" ;;
  esac
}
stat_of() { sleep 0.3; cat "$1" 2>/dev/null || echo 0; }
# One timed fetch: appends "seconds bytes" to RESULT_FILE.
once() { # CLIENT URL STATS_FILE RESULT_FILE
  local before after start end
  before=$(stat_of "$3")
  start=$(date +%s.%N)
  fetch "$1" "$2"
  end=$(date +%s.%N)
  after=$(stat_of "$3")
  [ "$(stat -c %s "$out")" = "$size" ] || { echo "bench: $1 produced a file of the wrong size" >&2; exit 1; }
  awk -v s="$start" -v e="$end" -v b="$((after - before))" 'BEGIN { printf "%.3f %d\n", e - s, b }' >>"$4"
}
median() { sort -n "$1" | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
most_bytes() { sort -n -k2 "$1" | tail -1 | awk '{ print $2 }'; }

# Rounds, each running every client once per case, so that whatever else
# the machine does weighs on every client alike.
clients=(backstop backstop-sha256 curl aria2c)
for round in $(seq "$runs"); do
  echo "bench: round $round of $runs" >&2
  for c in "${clients[@]}"; do
    once "$c" "http://127.0.0.1:$nginx_port/big.bin" /dev/null "$work/$c.free"
    once "$c" "http://127.0.0.1:$plain_port/big.bin" "$work/plain.stats" "$work/$c.plain"
    once "$c" "http://127.0.0.1:$cut_port/big.bin" "$work/cut.stats" "$work/$c.cut"
  done
done
for c in "${clients[@]}"; do
  fetch "$c" "http://127.0.0.1:$cut_port/big.bin"
  [ "$(sha256sum "$out" | cut -d' ' -f1)" = "$sha" ] || { echo "bench: $c produced other bytes" >&2; exit 1; }
done
declare -A free plain cut bytes
for c in "${clients[@]}"; do
  free[$c]=$(median "$work/$c.free")
  plain[$c]=$(median "$work/$c.plain")
  cut[$c]=$(median "$work/$c.cut")
  bytes[$c]=$(most_bytes "$work/$c.cut")
done

gibs() { awk -v b="$size" -v t="$1" 'BEGIN { printf "%.2f", b / t / 1073741824 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
echo
echo "${size_mib} MiB from nginx on loopback, cut every ${cut_mib} MiB in (2); medians of $runs rounds"
echo
echo "| client | (1) fault-free | throughput ÷ curl's | through the proxy, no cut | (2) cut every ${cut_mib} MiB | bytes fetched ÷ size | time ÷ no-cut time |"
echo "|---|---|---|---|---|---|---|"
for c in "${clients[@]}"; do
  echo "| $c | ${free[$c]} s ($(gibs "${free[$c]}") GiB/s) | $(ratio "${free[curl]}" "${free[$c]}")× | ${plain[$c]} s | ${cut[$c]} s | $(ratio "${bytes[$c]}" "$size") | $(ratio "${cut[$c]}" "${plain[$c]}")× |"
done
