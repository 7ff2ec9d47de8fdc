#!/usr/bin/env bash
# HTTP end-to-end comparisons on the bench image (benches/make-osimg.sh), in one run.
# Usage: benches/e2e-http.sh DIR [BIN]   (DIR made by benches/make-osimg.sh)
# Serves DIR with nginx on 127.0.0.1:18080 (benches/nginx.conf) and
# with faultserve on 127.0.0.1:18090/18091 (a reset every 500 MB / none).
# Warm page cache, as benches/baselines.sh: one warm-up run, then
# RUNS runs; before each, the previous output is removed and synced.
# Prints a markdown table: ours, median, anchor, median, ratio, our peak RSS.
set -euo pipefail
D=$(cd "${1:?bench dir}" && pwd)
BIN=$(realpath "${2:-target/release/diskimport}")
FAULT=$(realpath "$(dirname "$BIN")/faultserve")
ROWS=$(realpath "$(dirname "$0")/rows.sh")
SHARED=$(cd "$(dirname "$0")" && pwd)
RUNS=${RUNS:-3}
command -v hyperfine >/dev/null && command -v nginx >/dev/null && command -v curl >/dev/null && [ -x /usr/bin/time ] || {
  apt-get update -qq && apt-get install -y -qq hyperfine nginx-light curl time >/dev/null; }
cd "$D"
sed "s#root .;#root $D;#" "$SHARED/nginx.conf" > nginx.run.conf
nginx -c "$D/nginx.run.conf" -p "$D" 2>/dev/null || true
"$FAULT" "$D" 18090 500000000 2>faultserve.log & F1=$!
"$FAULT" "$D" 18091 0 2>/dev/null & F2=$!
trap 'kill $F1 $F2 2>/dev/null; nginx -c "$D/nginx.run.conf" -p "$D" -s stop 2>/dev/null || true; rm -f out.raw scratch.img rss.txt' EXIT
sleep 0.5
U=http://127.0.0.1:18080
PREP='rm -f out.raw scratch.img; sync'
WARMUP=1
TAG=http
. "$ROWS"
C="$BIN convert --no-progress"
echo "| ours | median | anchor | median | ratio | peak RSS |"
echo "| --- | --- | --- | --- | --- | --- |"
row qcow2-cdi "$C $U/os.qcow2 out.raw" "curl -o scratch.img URL && qemu-img convert -t writeback -O raw scratch.img out.raw" \
  "sh -c 'curl -s -o scratch.img $U/os.qcow2 && qemu-img convert -t writeback -O raw scratch.img out.raw'"
row qcow2-curl "$C $U/os.qcow2 out.raw" "curl -o /dev/null URL" "curl -s -o /dev/null $U/os.qcow2"
# CDI's importer contract, env-configured, into DIR/pod/data/disk.img.
mkdir -p pod/data pod/dev
IMPORT="env IMPORTER_SOURCE=http IMPORTER_ENDPOINT=$U/os.qcow2 IMPORTER_IMAGE_SIZE=10Gi OWNER_UID=bench DISKIMPORT_METRICS_ADDRESS=127.0.0.1:0 $BIN import --root $D/pod"
PREP='rm -f out.raw scratch.img pod/data/disk.img; sync'
row cdi-import "$IMPORT" "curl -o scratch.img URL && qemu-img convert -t writeback -O raw scratch.img out.raw" \
  "sh -c 'curl -s -o scratch.img $U/os.qcow2 && qemu-img convert -t writeback -O raw scratch.img out.raw'"
rm -rf pod
PREP='rm -f out.raw scratch.img; sync'
row qcow2gz "$C $U/os.qcow2.gz out.raw" "$C os.qcow2.gz out.raw" "$C os.qcow2.gz out.raw"
row rawgz "$C $U/os.raw.gz out.raw" "$C os.raw.gz out.raw" "$C os.raw.gz out.raw"
row rawxz "$C $U/os.raw.xz out.raw" "$C os.raw.xz out.raw" "$C os.raw.xz out.raw"
row reset "$C --output json http://127.0.0.1:18090/os.qcow2 out.raw" "$C (no resets) http://127.0.0.1:18091/os.qcow2 out.raw" \
  "$C http://127.0.0.1:18091/os.qcow2 out.raw"
echo "faultserve: $(grep -c cut faultserve.log || true) resets" >&2
