#!/usr/bin/env bash
# End-to-end comparisons on the bench image (benches/make-osimg.sh), in one run, same machine.
# Usage: benches/e2e.sh DIR [BIN]   (DIR made by benches/make-osimg.sh)
# Prints a markdown table: command, our median, anchor median, ratio, our peak RSS.
set -euo pipefail
D=$(cd "${1:?bench dir}" && pwd)
ROWS=$(realpath "$(dirname "$0")/rows.sh")
BIN=$(realpath "${2:-target/release/diskimport}")
RUNS=${RUNS:-3}
command -v hyperfine >/dev/null && command -v pigz >/dev/null && [ -x /usr/bin/time ] || {
  apt-get update -qq && apt-get install -y -qq hyperfine pigz time >/dev/null; }
cd "$D"
# Cold page cache for every run, ours and anchors alike.
PREP='rm -f out.raw scratch.img; sync; echo 3 > /proc/sys/vm/drop_caches'

WARMUP=0
TAG=e2e
. "$ROWS"

echo "| ours | median | anchor | median | ratio | peak RSS |"
echo "| --- | --- | --- | --- | --- | --- |"
row gz  "$BIN convert --no-progress os.raw.gz out.raw" "pigz -dc os.raw.gz | dd of=out.raw bs=64k conv=sparse" \
  "sh -c 'pigz -dc os.raw.gz | dd of=out.raw bs=64k conv=sparse status=none'"
row xz  "$BIN convert --no-progress os.raw.xz out.raw" "xz -T2 -dc os.raw.xz > /dev/null" \
  "sh -c 'xz -T2 -dc os.raw.xz > /dev/null'"
row raw "$BIN convert --no-progress os.raw out.raw" "qemu-img convert -t none -f raw -O raw os.raw out.raw" \
  "qemu-img convert -t none -f raw -O raw os.raw out.raw"
row qcow2 "$BIN convert --no-progress os.qcow2 out.raw" "qemu-img convert -t none -f qcow2 -O raw os.qcow2 out.raw" \
  "qemu-img convert -t none -f qcow2 -O raw os.qcow2 out.raw"
row zqcow2 "$BIN convert --no-progress os.z.qcow2 out.raw" "qemu-img convert -f qcow2 -O raw os.z.qcow2 out.raw" \
  "qemu-img convert -f qcow2 -O raw os.z.qcow2 out.raw"
row qcow2gz "$BIN convert --no-progress os.qcow2.gz out.raw" "pigz -dc os.qcow2.gz > scratch.img && qemu-img convert -O raw scratch.img out.raw" \
  "sh -c 'pigz -dc os.qcow2.gz > scratch.img && qemu-img convert -O raw scratch.img out.raw'"
rm -f out.raw rss.txt scratch.img
