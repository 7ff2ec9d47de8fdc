#!/usr/bin/env bash
# HTTP end-to-end comparisons on the bench image (benches/make-osimg.sh), in one run.
# Usage: benches/e2e-http.sh DIR [BIN]   (DIR made by benches/make-osimg.sh)
# Serves DIR with nginx on 127.0.0.1:18080 (benches/nginx.conf) and
# with faultserve on 127.0.0.1:18090/18091 (a reset every 500 MB / none).
# Warm page cache, as benches/baselines.sh: one warm-up run, then
# RUNS runs; before each, the previous output is removed and synced.
# COLD=1: the page cache is dropped before every run instead (rows.sh).
# Every row carries its physical limit (rows.sh).
# Prints a markdown table: ours, median, anchor, median, ratio, our peak RSS.
set -euo pipefail
D=$(cd "${1:?bench dir}" && pwd)
BIN=$(realpath "${2:-target/release/diskimport}")
FAULT=$(realpath "$(dirname "$BIN")/faultserve")
ROWS=$(realpath "$(dirname "$0")/rows.sh")
SHARED=$(cd "$(dirname "$0")" && pwd)
FAST=${RUNS:-5}
SLOW=${RUNS:-3}
RUNS=$FAST
command -v nginx >/dev/null && command -v curl >/dev/null && [ -x /usr/bin/time ] || {
  apt-get update -qq && apt-get install -y -qq nginx-light curl time >/dev/null; }
cd "$D"
sed "s#root .;#root $D;#" "$SHARED/nginx.conf" > nginx.run.conf
nginx -c "$D/nginx.run.conf" -p "$D" 2>/dev/null || true
"$FAULT" "$D" 18090 500000000 2>faultserve.log & F1=$!
"$FAULT" "$D" 18091 0 2>/dev/null & F2=$!
trap 'kill $F1 $F2 2>/dev/null; nginx -c "$D/nginx.run.conf" -p "$D" -s stop 2>/dev/null || true; rm -f out.raw out-?.raw scratch.img rss.txt lim.img' EXIT
sleep 0.5
U=http://127.0.0.1:18080
PREP='rm -f out.raw out-?.raw scratch.img; sync'
WARMUP=1
[ "${COLD:-0}" = 1 ] && WARMUP=0
TAG=http
LIMITBIN=$(realpath "$(dirname "$BIN")/decodelimit")
. "$ROWS"
C="$BIN convert --no-progress"
CURL="cmd:curl:curl -s -o /dev/null $U/os.qcow2"
header
# The link and the disk: the row against its limits, in turns with the
# same conversion from the local file. Not in turns with CDI's path (the
# next row): the 4 GB it writes through the page cache slow the runs
# after it (benches/RESULTS.md, "HTTP qcow2 and what runs before it").
row qcow2 "$C $U/os.qcow2 out.raw" "$C os.qcow2 out.raw" "$C os.qcow2 out.raw" write read:os.qcow2 both:os.qcow2 "$CURL"
# CDI's path: download to scratch, then CDI's own conversion, which runs
# `qemu-img convert -t writeback` (pkg/image/qemu.go).
row qcow2-cdi "$C $U/os.qcow2 out.raw" "curl -o scratch.img URL && qemu-img convert -t writeback -O raw scratch.img out.raw" \
  "sh -c 'curl -s -o scratch.img $U/os.qcow2 && qemu-img convert -t writeback -O raw scratch.img out.raw'" write read:os.qcow2 both:os.qcow2 "$CURL"
# CDI's importer contract, env-configured, into DIR/pod/data/disk.img.
mkdir -p pod/data pod/dev
IMPORT="env IMPORTER_SOURCE=http IMPORTER_ENDPOINT=$U/os.qcow2 IMPORTER_IMAGE_SIZE=10Gi OWNER_UID=bench DISKIMPORT_METRICS_ADDRESS=127.0.0.1:0 $BIN import --root $D/pod"
SAVED=$PREP
PREP="$PREP; rm -f pod/data/disk.img"
row cdi-import "$IMPORT" "curl -o scratch.img URL && qemu-img convert -t writeback -O raw scratch.img out.raw" \
  "sh -c 'curl -s -o scratch.img $U/os.qcow2 && qemu-img convert -t writeback -O raw scratch.img out.raw'" write read:os.qcow2 both:os.qcow2 "$CURL"
rm -rf pod
PREP=$SAVED
RUNS=$SLOW
row qcow2gz "$C $U/os.qcow2.gz out.raw" "$C os.qcow2.gz out.raw" "$C os.qcow2.gz out.raw" \
  write read:os.qcow2.gz gz:os.qcow2.gz "cmd:curl-qcow2gz:curl -s -o /dev/null $U/os.qcow2.gz"
row rawgz "$C $U/os.raw.gz out.raw" "$C os.raw.gz out.raw" "$C os.raw.gz out.raw" \
  write read:os.raw.gz gz:os.raw.gz "cmd:curl-rawgz:curl -s -o /dev/null $U/os.raw.gz"
row rawxz "$C $U/os.raw.xz out.raw" "$C os.raw.xz out.raw" "$C os.raw.xz out.raw" \
  write read:os.raw.xz "cmd:xz-T2:sh -c 'xz -T2 -dc os.raw.xz > /dev/null'"
RUNS=$FAST
row reset "$C --output json http://127.0.0.1:18090/os.qcow2 out.raw" "$C (no resets) http://127.0.0.1:18091/os.qcow2 out.raw" \
  "$C http://127.0.0.1:18091/os.qcow2 out.raw" write read:os.qcow2 both:os.qcow2 "$CURL"
echo "faultserve: $(grep -c cut faultserve.log || true) resets" >&2
# Guard: four imports at once finish sooner than four in a row (peak RSS is
# the largest single process).
RUNS=$SLOW
row concurrent4 "sh -c 'for i in 1 2 3 4; do $C $U/os.qcow2 out-\$i.raw & done; wait'" "the four one after another" \
  "sh -c 'for i in 1 2 3 4; do $C $U/os.qcow2 out-\$i.raw; done'"
