#!/bin/bash
# Origin: the workplace bench kit (copied into the repository so a clone runs alone).
# Side-by-side anchors on the OS-like fixture (make-osimg.sh DIR first).
# Usage: baselines.sh DIR   -> prints hyperfine medians; every command writes DIR/out.raw
set -uo pipefail
need() { for t in "$@"; do pkg=${t%%:*}; bin=${t##*:}; command -v "$bin" >/dev/null || { apt-get update -qq; apt-get install -y -qq "$pkg" >/dev/null; }; done; }
need pigz hyperfine nginx-light:nginx nbdkit curl qemu-utils:qemu-img
D=${1:?dir}; cd "$D"
R="hyperfine -N --warmup 1 --runs ${RUNS:-3} --export-json"
URL=http://127.0.0.1:18080
sed "s#root .;#root $D;#" "$(dirname "$0")/nginx.conf" > nginx.run.conf
nginx -c "$D/nginx.run.conf" -p "$D" 2>/dev/null || true
sleep 0.5
run() { name=$1; shift; hyperfine --warmup 1 --runs ${RUNS:-3} --prepare 'rm -f out.raw scratch.img' --export-json "res-$name.json" "$@" >/dev/null 2>&1; python3 - "$name" <<'PY'
import json,sys
r=json.load(open(f"res-{sys.argv[1]}.json"))["results"][0]
print(f"{sys.argv[1]:28s} median {r['median']:7.2f}s  min {r['min']:7.2f}s  max {r['max']:7.2f}s")
PY
}
run disk-write-4g-direct   "dd if=/dev/zero of=out.raw bs=1M count=4096 oflag=direct status=none"
run http-curl-qcow2-null   "curl -s -o /dev/null $URL/os.qcow2"
run local-qcow2-qemu-img   "qemu-img convert -f qcow2 -O raw os.qcow2 out.raw"
run local-qcow2-qemu-img-direct "qemu-img convert -t none -f qcow2 -O raw os.qcow2 out.raw"
run local-zqcow2-qemu-img  "qemu-img convert -f qcow2 -O raw os.z.qcow2 out.raw"
run local-raw-qemu-img     "qemu-img convert -f raw -O raw os.raw out.raw"
run gz-decode-pigz-null    "sh -c 'pigz -dc os.raw.gz > /dev/null'"
run gz-decode-gzip-null    "sh -c 'gzip -dc os.raw.gz > /dev/null'"
run xz-decode-T1-null      "sh -c 'xz -T1 -dc os.raw.xz > /dev/null'"
run xz-decode-T2-null      "sh -c 'xz -T2 -dc os.raw.xz > /dev/null'"
run gz-pigz-dd-sparse      "sh -c 'pigz -dc os.raw.gz | dd of=out.raw bs=64k conv=sparse status=none'"
run cdi-http-qcow2-scratch "sh -c 'curl -s -o scratch.img $URL/os.qcow2 && qemu-img convert -t writeback -O raw scratch.img out.raw'"
run cdi-http-qcow2gz-scratch "sh -c 'curl -s $URL/os.qcow2.gz | pigz -dc > scratch.img && qemu-img convert -t writeback -O raw scratch.img out.raw'"
run nbdkit-http-qcow2      "sh -c 'rm -f $D/nbd.sock; nbdkit -U $D/nbd.sock curl $URL/os.qcow2 & sleep 1; qemu-img convert -f qcow2 -O raw nbd+unix:///?socket=$D/nbd.sock out.raw; kill \$!'"
rm -f out.raw scratch.img
nginx -c "$D/nginx.run.conf" -p "$D" -s stop 2>/dev/null || true
