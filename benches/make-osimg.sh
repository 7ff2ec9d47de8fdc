#!/bin/bash
# Origin: the workplace bench kit (copied into the repository so a clone runs alone).
# Build a realistic OS-like disk image (ext4 filled with real binaries, libraries, text)
# and its qcow2 / compressed variants, for side-by-side throughput runs.
# Usage: make-osimg.sh OUTDIR   (needs ~25 GiB free; run as root for cp -al)
set -euo pipefail
need() { for t in "$@"; do pkg=${t%%:*}; bin=${t##*:}; command -v "$bin" >/dev/null || { apt-get update -qq; apt-get install -y -qq "$pkg" >/dev/null; }; done; }
need pigz e2fsprogs:mkfs.ext4 xz-utils:xz qemu-utils:qemu-img
OUT=${1:?outdir}
mkdir -p "$OUT"; cd "$OUT"
if [ ! -f os.raw ]; then
  rm -rf stage; mkdir stage
  for d in /usr/share /usr/bin /usr/lib/x86_64-linux-gnu /usr/lib/llvm-14 /usr/lib/python3.11; do
    cp -a --reflink=auto "$d" "stage/$(echo $d | tr / _)"
  done
  du -sh stage
  truncate -s 10G os.raw
  mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 -d stage os.raw
  rm -rf stage
fi
[ -f os.qcow2 ]     || qemu-img convert -f raw -O qcow2 os.raw os.qcow2
[ -f os.z.qcow2 ]   || qemu-img convert -f raw -O qcow2 -c os.raw os.z.qcow2
[ -f os.raw.gz ]    || pigz -k -c os.raw > os.raw.gz
[ -f os.qcow2.gz ]  || pigz -k -c os.qcow2 > os.qcow2.gz
[ -f os.raw.xz ]    || xz -T2 -k -c -3 os.raw > os.raw.xz
[ -f os.qcow2.xz ]  || xz -T2 -k -c -3 os.qcow2 > os.qcow2.xz
ls -ls "$OUT"
qemu-img info os.qcow2 | head -6
qemu-img map --output=json os.raw | python3 -c 'import json,sys; m=json.load(sys.stdin); print("data bytes:", sum(e["length"] for e in m if e["data"]))'
