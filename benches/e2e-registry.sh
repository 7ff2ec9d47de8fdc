#!/usr/bin/env bash
# The registry source on the bench image (benches/make-osimg.sh), in one run.
# Usage: benches/e2e-registry.sh DIR [BIN]
# Starts Debian's docker-registry on 127.0.0.1:18500 (store in DIR), pushes
# os.qcow2 as a container disk (gzip layer) once, then compares:
#   registry-cdi:   ours from docker:// vs CDI's path (skopeo copy to a
#                   scratch dir, extract the disk file, qemu-img convert -t none)
#   registry-local: ours from docker:// vs ours from the local os.qcow2.gz
#                   (the same decode work, no network)
# Warm page cache, as the other end-to-end benches. Prints markdown rows.
set -euo pipefail
D=$(cd "${1:?bench dir}" && pwd)
BIN=$(realpath "${2:-target/release/diskimport}")
ROWS=$(realpath "$(dirname "$0")/rows.sh")
RUNS=${RUNS:-3}
command -v docker-registry >/dev/null && command -v skopeo >/dev/null && [ -x /usr/bin/time ] || {
  apt-get update -qq && apt-get install -y -qq docker-registry skopeo jq time >/dev/null; }
cd "$D"
mkdir -p registry-store
cat > registry.yml <<YML
version: 0.1
log: {level: error}
storage: {filesystem: {rootdirectory: $D/registry-store}}
http: {addr: 127.0.0.1:18500, secret: bench}
YML
docker-registry serve registry.yml > registry.log 2>&1 & R=$!
trap 'kill $R 2>/dev/null; rm -rf out.raw scratch rss.txt lim.img' EXIT
for _ in $(seq 50); do curl -sf http://127.0.0.1:18500/v2/ >/dev/null && break; sleep 0.1; done
REF=docker://127.0.0.1:18500/os:gz
if ! skopeo inspect --tls-verify=false "$REF" >/dev/null 2>&1; then
  /usr/bin/time -f 'push: %e s, %M KiB' "$BIN" containerdisk push --insecure os.qcow2 "$REF"
fi
PREP='rm -rf out.raw scratch; sync'
# COLD=1: drop the page cache before every run (registry store and the
# local .gz read from disk; rows.sh).
WARMUP=1
[ "${COLD:-0}" = 1 ] && WARMUP=0
TAG=registry
LIMITBIN=$(realpath "$(dirname "$BIN")/decodelimit")
. "$ROWS"
C="$BIN convert --no-progress"
# The layer blob in the registry's store: its read and its inflate are
# limits of both rows.
LAYER=$(find registry-store -name data -size +100M | head -1)
LIMITS="write read:$LAYER both:$LAYER gz:$LAYER"
header
# CDI's path, as a script (no nested quoting).
cat > cdi-registry.sh <<SH
set -e
skopeo copy --quiet --src-tls-verify=false $REF dir:scratch
L=\$(jq -r '.layers[0].digest' scratch/manifest.json | cut -d: -f2)
tar -xzf scratch/\$L -C scratch
rm scratch/\$L
qemu-img convert -t none -O raw scratch/disk/os.qcow2 out.raw
SH
row registry-cdi "$C --insecure $REF out.raw" "skopeo copy to scratch, extract, qemu-img convert -t none" "sh $D/cdi-registry.sh" $LIMITS
row registry-local "$C --insecure $REF out.raw" "$C os.qcow2.gz out.raw" "$C os.qcow2.gz out.raw" $LIMITS
# Scratch: ours writes nothing but the target (the stream reader's spill
# area stays empty on qemu's layout).
sh -c "$PREP"
"$BIN" -v convert --no-progress --insecure "$REF" out.raw 2>&1 | grep -o 'qcow2 streamed in one pass.*\|spooled to scratch.*' | sed 's/^/spill: /' >&2
