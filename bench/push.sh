#!/usr/bin/env bash
# backstop push against oras (PyPI, chunked) and skopeo (Debian, copying an
# OCI layout) in the same run, and backstop pull against oras pull: a model
# directory (a few large weights and small files) to a local registry
# (Debian's docker-registry, distribution 2.8, with its own configuration
# and port, storage on tmpfs; BENCH_DIR moves it), on loopback.
#
#   bench/push.sh                          # 2 GiB, uploads cut every 256 MiB, 3 rounds
#   SIZE_MIB=512 RUNS=1 bench/push.sh
#
# (1) fault-free: each tool straight to the registry (push), and back
#     (pull); then through backstop-cutproxy --upload with no cut, which
#     counts the bytes each push sends.
# (2) cut, straight: each push through backstop-cutproxy --upload, which
#     cuts the connection each time another CUT_MIB MiB has gone towards
#     the registry. Bytes sent (counted at the proxy) against the blob
#     bytes, and time against the same tool through the proxy with no cut.
#     Straight against distribution 2.8 a torn chunk ends its upload
#     session, whatever the client does: that blob starts over.
# (3) cut, behind a buffering nginx (as Harbor puts one before its
#     registry): the same proxy, cutting, in front of an nginx that buffers
#     each request body whole before passing it on, so a torn chunk never
#     reaches the registry and the session survives. Time against the same
#     tool through the proxy and nginx with no cut.
# oras-py and skopeo do not resume an upload: they run the way people run
# them, again until they succeed, at most TRIES times (a blob larger than
# CUT_MIB never gets through a tool that restarts it, nor through
# distribution 2.8 straight: the default weights, LARGE_FILES of them,
# are each a little under CUT_MIB).
# Every push goes to a new repository, so that nothing is skipped as
# already there. Installs docker-registry, nginx and skopeo from Debian
# when missing, and oras from PyPI in a venv under target/. Times are
# medians of RUNS rounds; bytes sent are the most any round sent.
set -euo pipefail
cd "$(dirname "$0")/.."
size_mib=${SIZE_MIB:-2048}
cut_mib=${CUT_MIB:-256}
runs=${RUNS:-3}
tries=${TRIES:-10}
large=${LARGE_FILES:-8}
# backstop's default chunk, and oras-py's.
chunk_mib=${CHUNK_MIB:-16}

need() {
  command -v "$1" >/dev/null || {
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
  }
}
need docker-registry docker-registry
need skopeo skopeo
need nginx nginx

venv=$PWD/target/bench-oras-venv
[ -x "$venv/bin/python" ] && "$venv/bin/python" -c 'import oras.client' 2>/dev/null || {
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q oras==0.2.43
}
py=$venv/bin/python

cargo build --release --quiet -p backstop -p backstop-faultserver
bin=$PWD/target/release/backstop
proxy_bin=$PWD/target/release/backstop-cutproxy

work=$(mktemp -d "${BENCH_DIR:-/dev/shm}/backstop-push.XXXXXX")
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
model=$work/model
mkdir -p "$model" "$work/state" "$work/docker"
chmod 755 "$work" # nginx's workers write their temporary files below it
export BACKSTOP_STATE=$work/state/backstop.db DOCKER_CONFIG=$work/docker
small_mib=16
big=$(((size_mib - small_mib) / large))
echo "bench: writing a ${size_mib} MiB model: $large weights of $big MiB and small files" >&2
for i in $(seq "$large"); do
  head -c $((big << 20)) /dev/urandom >"$model/model-0000$i-of-0000$large.safetensors"
done
head -c $((small_mib << 20)) /dev/urandom >"$model/tokenizer.json"
echo '{"model_type":"bench"}' >"$model/config.json"
echo '# bench' >"$model/README.md"
blob_bytes=$(du -cb "$model"/* | tail -1 | cut -f1)

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
reg_port=$(free_port)
cut_port=$(free_port)
plain_port=$(free_port)
nginx_port=$(free_port)
ncut_port=$(free_port)
nplain_port=$(free_port)
cat >"$work/registry.yml" <<CONF
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $work/registry
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:$reg_port
  secret: backstop-bench
CONF
docker-registry serve "$work/registry.yml" >"$work/registry.log" 2>&1 &
pids+=($!)
"$proxy_bin" --upload "127.0.0.1:$cut_port" "127.0.0.1:$reg_port" $((cut_mib << 20)) "$work/cut.stats" 2>/dev/null &
pids+=($!)
"$proxy_bin" --upload "127.0.0.1:$plain_port" "127.0.0.1:$reg_port" 0 "$work/plain.stats" 2>/dev/null &
pids+=($!)
# nginx in front of the registry, buffering each request body whole (as
# Harbor's does), and the two proxies in front of it.
mkdir -p "$work/nginx"
cat >"$work/nginx/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log;
events { worker_connections 256; }
http {
  access_log off;
  client_body_temp_path $work/nginx/body;
  proxy_temp_path $work/nginx/proxy;
  fastcgi_temp_path $work/nginx/fastcgi;
  uwsgi_temp_path $work/nginx/uwsgi;
  scgi_temp_path $work/nginx/scgi;
  server {
    listen 127.0.0.1:$nginx_port;
    client_max_body_size 0;
    proxy_request_buffering on;
    location / {
      proxy_pass http://127.0.0.1:$reg_port;
      proxy_set_header Host \$http_host;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
    }
  }
}
CONF
nginx -c "$work/nginx/nginx.conf" &
pids+=($!)
"$proxy_bin" --upload "127.0.0.1:$ncut_port" "127.0.0.1:$nginx_port" $((cut_mib << 20)) "$work/ncut.stats" 2>/dev/null &
pids+=($!)
"$proxy_bin" --upload "127.0.0.1:$nplain_port" "127.0.0.1:$nginx_port" 0 "$work/nplain.stats" 2>/dev/null &
pids+=($!)
for port in "$reg_port" "$cut_port" "$plain_port" "$nginx_port" "$ncut_port" "$nplain_port"; do
  for _ in $(seq 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.05
  done
done

# The OCI layout skopeo copies, and the file list oras pushes: the same
# files and media types as backstop's artifact (layout blobs hard-linked).
"$py" - "$model" "$work/layout" "$work/oras-files.json" <<'PY'
import hashlib, json, os, sys
model, layout, listing = sys.argv[1:4]
os.makedirs(f"{layout}/blobs/sha256")
def blob(data=None, path=None):
    h = hashlib.sha256()
    if path:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        size = os.path.getsize(path)
    else:
        h.update(data); size = len(data)
    hexd = h.hexdigest(); dest = f"{layout}/blobs/sha256/{hexd}"
    if path:
        os.link(path, dest)
    else:
        open(dest, "wb").write(data)
    return f"sha256:{hexd}", size
def role(name):
    if name.endswith(".safetensors"): return "weight"
    if name in ("config.json",) or name.startswith("tokenizer"): return "weight.config"
    return "doc"
layers, files = [], []
for name in sorted(os.listdir(model)):
    digest, size = blob(path=f"{model}/{name}")
    media = f"application/vnd.cncf.model.{role(name)}.v1.raw"
    layers.append({"mediaType": media, "digest": digest, "size": size,
                   "annotations": {"org.cncf.model.filepath": name, "org.opencontainers.image.title": name}})
    files.append(f"{name}:{media}")
config = json.dumps({"descriptor": {"name": "bench"}, "modelfs": {"type": "layers", "diffIds": [l["digest"] for l in layers]}}).encode()
cdigest, csize = blob(data=config)
manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "artifactType": "application/vnd.cncf.model.manifest.v1+json",
    "config": {"mediaType": "application/vnd.cncf.model.config.v1+json", "digest": cdigest, "size": csize},
    "layers": layers}).encode()
mdigest, msize = blob(data=manifest)
json.dump({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
    "digest": mdigest, "size": msize, "annotations": {"org.opencontainers.image.ref.name": "v1"}}]},
    open(f"{layout}/index.json", "w"))
json.dump({"imageLayoutVersion": "1.0.0"}, open(f"{layout}/oci-layout", "w"))
json.dump(files, open(listing, "w"))
PY

ORAS_PUSH='
import json, sys
import oras.client
target, files = sys.argv[1], json.load(open(sys.argv[2]))
r = oras.client.OrasClient(insecure=True).push(files=files, target=target, do_chunked=True, chunk_size=int(sys.argv[3]))
sys.exit(0 if r.status_code == 201 else 1)
'
ORAS_PULL='
import sys
import oras.client
oras.client.OrasClient(insecure=True).pull(target=sys.argv[1], outdir=sys.argv[2])
'
# One push of the model by TOOL to HOST/REPO:v1; 0 when it got there.
push() { # TOOL HOST REPO
  case $1 in
  backstop) "$bin" -q push "$model" "oci://$2/$3:v1" --plain-http --chunk-size ${chunk_mib}MiB >/dev/null 2>>"$work/backstop.err" ;;
  oras) for _ in $(seq "$tries"); do
      (cd "$model" && "$py" -c "$ORAS_PUSH" "$2/$3:v1" "$work/oras-files.json" $((chunk_mib << 20))) >/dev/null 2>&1 && return 0
    done; return 1 ;;
  skopeo) # Its blob cache would mount the blobs an earlier push sent to
    # another repository of this registry instead of sending them: the
    # cache is removed, as on a machine that never pushed them.
    rm -f /var/lib/containers/cache/blob-info-cache-v1.boltdb \
      "${XDG_DATA_HOME:-$HOME/.local/share}/containers/cache/blob-info-cache-v1.boltdb"
    for _ in $(seq "$tries"); do
      skopeo copy -q --dest-tls-verify=false "oci:$work/layout:v1" "docker://$2/$3:v1" >/dev/null 2>&1 && return 0
    done; return 1 ;;
  esac
}
pull() { # TOOL REPO DIR
  rm -rf "$3"
  case $1 in
  backstop) "$bin" -q pull "oci://127.0.0.1:$reg_port/$2:v1" --plain-http --dir "$3" ;;
  oras) "$py" -c "$ORAS_PULL" "127.0.0.1:$reg_port/$2:v1" "$3" >/dev/null ;;
  esac
}
stat_of() { sleep 0.2; cat "$1" 2>/dev/null || echo 0; }
# One timed run: appends "seconds bytes" (or "dnf bytes") to RESULT_FILE.
once() { # RESULT_FILE STATS_FILE COMMAND...
  local result=$1 stats=$2 before after start end ok=1
  shift 2
  before=$(stat_of "$stats")
  start=$(date +%s.%N)
  "$@" || ok=0
  end=$(date +%s.%N)
  after=$(stat_of "$stats")
  if [ $ok = 1 ]; then
    awk -v s="$start" -v e="$end" -v b="$((after - before))" 'BEGIN { printf "%.3f %d\n", e - s, b }' >>"$result"
  else
    echo "bench: $* did not finish" >&2
    echo "dnf $((after - before))" >>"$result"
  fi
}
median() { { grep -v '^dnf' "$1" || true; } | sort -n | awk '{ a[NR] = $1 } END { if (NR) print a[int((NR + 1) / 2)]; else print "dnf" }'; }
most_bytes() { sort -n -k2 "$1" | tail -1 | awk '{ print $2 }'; }
same() { # DIR: the model's files, byte for byte
  for f in "$model"/*; do cmp -s "$f" "$1/$(basename "$f")" || { echo "bench: $1/$(basename "$f") differs" >&2; exit 1; }; done
}

tools=(backstop oras skopeo)
for round in $(seq "$runs"); do
  echo "bench: round $round of $runs" >&2
  for t in "${tools[@]}"; do
    once "$work/$t.free" /dev/null push "$t" "127.0.0.1:$reg_port" "$t/free-$round"
    once "$work/$t.plain" "$work/plain.stats" push "$t" "127.0.0.1:$plain_port" "$t/plain-$round"
    once "$work/$t.cut" "$work/cut.stats" push "$t" "127.0.0.1:$cut_port" "$t/cut-$round"
    once "$work/$t.nplain" "$work/nplain.stats" push "$t" "127.0.0.1:$nplain_port" "$t/nplain-$round"
    once "$work/$t.ncut" "$work/ncut.stats" push "$t" "127.0.0.1:$ncut_port" "$t/ncut-$round"
  done
  for t in backstop oras; do
    once "$work/$t.pull" /dev/null pull "$t" "backstop/free-$round" "$work/out-$t"
    same "$work/out-$t"
    rm -rf "$work/out-$t"
  done
done
declare -A free plain cut bytes plain_bytes pulled nplain ncut nbytes
for t in "${tools[@]}"; do
  free[$t]=$(median "$work/$t.free")
  plain[$t]=$(median "$work/$t.plain")
  cut[$t]=$(median "$work/$t.cut")
  bytes[$t]=$(most_bytes "$work/$t.cut")
  plain_bytes[$t]=$(most_bytes "$work/$t.plain")
  nplain[$t]=$(median "$work/$t.nplain")
  ncut[$t]=$(median "$work/$t.ncut")
  nbytes[$t]=$(most_bytes "$work/$t.ncut")
done
for t in backstop oras; do pulled[$t]=$(median "$work/$t.pull"); done

rate() { [ "$1" = dnf ] && echo dnf || awk -v b="$blob_bytes" -v t="$1" 'BEGIN { printf "%.0f MiB/s", b / t / 1048576 }'; }
ratio() { { [ "$1" = dnf ] || [ "$2" = dnf ]; } && echo "–" || awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
echo
echo "${size_mib} MiB model ($large × $big MiB + small files) to docker-registry 2.8 on loopback, uploads cut every ${cut_mib} MiB in (2) and (3); medians of $runs rounds"
echo
echo "| tool | (1) push | push ÷ backstop's time | bytes sent ÷ blobs, no cut | through the proxy, no cut | (2) cut every ${cut_mib} MiB, straight | bytes sent ÷ blobs | time ÷ no-cut time |"
echo "|---|---|---|---|---|---|---|---|"
for t in "${tools[@]}"; do
  echo "| $t | ${free[$t]} s ($(rate "${free[$t]}")) | $(ratio "${free[$t]}" "${free[backstop]}")× | $(ratio "${plain_bytes[$t]}" "$blob_bytes") | ${plain[$t]} s | ${cut[$t]} s | $(ratio "${bytes[$t]}" "$blob_bytes") | $(ratio "${cut[$t]}" "${plain[$t]}")× |"
done
echo
echo "| tool | through the proxy and nginx, no cut | (3) cut every ${cut_mib} MiB, behind nginx | bytes sent ÷ blobs | time ÷ no-cut time |"
echo "|---|---|---|---|---|"
for t in "${tools[@]}"; do
  echo "| $t | ${nplain[$t]} s | ${ncut[$t]} s | $(ratio "${nbytes[$t]}" "$blob_bytes") | $(ratio "${ncut[$t]}" "${nplain[$t]}")× |"
done
echo
echo "| tool | pull | pull ÷ backstop's time |"
echo "|---|---|---|"
for t in backstop oras; do
  echo "| $t | ${pulled[$t]} s ($(rate "${pulled[$t]}")) | $(ratio "${pulled[$t]}" "${pulled[backstop]}")× |"
done
