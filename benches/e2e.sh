#!/usr/bin/env bash
# Local end-to-end comparisons on the bench image (benches/make-osimg.sh),
# in one run, same machine, each row with its physical limit (rows.sh).
# Usage: [COLD=1] [ONLY="raw qcow2"] benches/e2e.sh DIR [BIN]
# Warm page cache by default (one warm-up run; output removed and synced
# before every run); COLD=1 drops the cache before every run instead.
# Every conversion is durable (fsync before exit); the qemu-img anchors
# for raw and qcow2 use -t none (O_DIRECT), as the goals name them.
set -euo pipefail
D=$(cd "${1:?bench dir}" && pwd)
ROWS=$(realpath "$(dirname "$0")/rows.sh")
BIN=$(realpath "${2:-target/release/diskimport}")
LIMITBIN=$(realpath "$(dirname "$BIN")/decodelimit")
# Fast rows get more runs (this disk's noise is about 20% run to run).
FAST=${RUNS:-5}
SLOW=${RUNS:-3}
command -v pigz >/dev/null && [ -x /usr/bin/time ] || {
  apt-get update -qq && apt-get install -y -qq pigz time >/dev/null; }
cd "$D"
PREP='rm -f out.raw scratch.img; sync'
WARMUP=1
[ "${COLD:-0}" = 1 ] && WARMUP=0
TAG=e2e
. "$ROWS"
C="$BIN convert --no-progress"
header
RUNS=$FAST
row raw "$C os.raw out.raw" "qemu-img convert -t none -f raw -O raw os.raw out.raw" \
  "qemu-img convert -t none -f raw -O raw os.raw out.raw" write read:os.raw both:os.raw
row qcow2 "$C os.qcow2 out.raw" "qemu-img convert -t none -f qcow2 -O raw os.qcow2 out.raw" \
  "qemu-img convert -t none -f qcow2 -O raw os.qcow2 out.raw" write read:os.qcow2 both:os.qcow2
row zqcow2 "$C os.z.qcow2 out.raw" "qemu-img convert -t none -f qcow2 -O raw os.z.qcow2 out.raw" \
  "qemu-img convert -t none -f qcow2 -O raw os.z.qcow2 out.raw" write read:os.z.qcow2 qcow2:os.z.qcow2 \
  "info:cmd:decode-1core:taskset -c 0 $LIMITBIN qcow2 os.z.qcow2"
RUNS=$SLOW
row qcow2gz "$C os.qcow2.gz out.raw" "pigz -dc os.qcow2.gz > scratch.img && qemu-img convert -t none -O raw scratch.img out.raw" \
  "sh -c 'pigz -dc os.qcow2.gz > scratch.img && qemu-img convert -t none -O raw scratch.img out.raw'" \
  write read:os.qcow2.gz gz:os.qcow2.gz
row gz "$C os.raw.gz out.raw" "pigz -dc os.raw.gz | dd of=out.raw bs=64k conv=sparse,fsync" \
  "sh -c 'pigz -dc os.raw.gz | dd of=out.raw bs=64k conv=sparse,fsync status=none'" write read:os.raw.gz gz:os.raw.gz
row xz "$C os.raw.xz out.raw" "xz -T2 -dc os.raw.xz > /dev/null" \
  "sh -c 'xz -T2 -dc os.raw.xz > /dev/null'" write read:os.raw.xz "cmd:xz-T2:sh -c 'xz -T2 -dc os.raw.xz > /dev/null'"
RUNS=$FAST
# Cost follows data, not virtual size: the same 1.1 GB of data in a 10 GiB
# and in an 8 TiB qcow2 (made here once from os.raw; qemu-img resize only
# grows the L1 table).
if [ ! -f big8t.qcow2 ]; then
  truncate -s 10G one.raw
  dd if=os.raw of=one.raw bs=1M count=1100 conv=sparse,notrunc status=none
  qemu-img convert -f raw -O qcow2 one.raw small10g.qcow2
  cp small10g.qcow2 big8t.qcow2 && qemu-img resize -q big8t.qcow2 8T && rm one.raw
fi
row 8tib "$C big8t.qcow2 out.raw" "$C small10g.qcow2 out.raw" "$C small10g.qcow2 out.raw" write read:big8t.qcow2 both:big8t.qcow2
rm -f out.raw rss.txt scratch.img lim.img
