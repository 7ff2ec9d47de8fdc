#!/usr/bin/env bash
# The upload server on the bench image (benches/make-osimg.sh), in one run.
# Usage: benches/e2e-upload.sh DIR [BIN]
# curl uploads over loopback TLS with a client certificate, as CDI's upload
# proxy does (POST, Content-Length, Expect: 100-continue). Rows:
#   upload-cdi:   ours (os.qcow2) vs CDI's path: the upload written to a
#                 scratch file (benches' sinkserve), then qemu-img convert -t none
#   (the same upload to a server that drops it is the link's limit)
#   upload-rawxz: ours (os.raw.xz) vs `diskimport convert os.raw.xz` locally
# Each of our runs starts a fresh server (it exits after one upload).
# Warm page cache. Prints markdown rows.
set -euo pipefail
D=$(cd "${1:?bench dir}" && pwd)
BIN=$(realpath "${2:-target/release/diskimport}")
SINK=$(realpath "$(dirname "$BIN")/sinkserve")
ROWS=$(realpath "$(dirname "$0")/rows.sh")
RUNS=${RUNS:-3}
[ -x /usr/bin/time ] || { apt-get update -qq && apt-get install -y -qq time >/dev/null; }
cd "$D"
P=$D/upload-pki
if [ ! -f "$P/client.crt" ]; then
  mkdir -p "$P"
  (cd "$P"
   q() { openssl "$@" >/dev/null 2>&1; }
   q req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=server-ca -keyout server-ca.key -out server-ca.crt
   q req -newkey rsa:2048 -nodes -subj /CN=upload -keyout tls.key -out tls.csr
   printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' > srv.ext
   q x509 -req -in tls.csr -CA server-ca.crt -CAkey server-ca.key -CAcreateserial -days 2 -extfile srv.ext -out tls.crt
   q req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=signer -keyout ca.key -out ca.crt
   q req -newkey rsa:2048 -nodes -subj /CN=client.upload-server.cdi.kubevirt.io -keyout client.key -out client.csr
   printf 'extendedKeyUsage=clientAuth\n' > cli.ext
   q x509 -req -in client.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 -extfile cli.ext -out client.crt)
fi
"$SINK" 18601 "$P/tls.crt" "$P/tls.key" & S1=$!
"$SINK" 18602 "$P/tls.crt" "$P/tls.key" "$D/scratch.img" & S2=$!
trap 'kill $S1 $S2 2>/dev/null; rm -rf out.raw scratch.img rss.txt upod lim.img' EXIT
CURL="curl -sSf -o /dev/null --cacert $P/server-ca.crt --cert $P/client.crt --key $P/client.key -X POST -H Content-Type:application/octet-stream"
# One upload to a fresh server: start, wait for the port, upload, wait for exit.
cat > up-ours.sh <<SH
set -e
mkdir -p $D/upod/data $D/upod/dev
TLS_KEY_FILE=$P/tls.key TLS_CERT_FILE=$P/tls.crt CLIENT_CERT_FILE=$P/ca.crt LISTEN_ADDRESS=127.0.0.1 LISTEN_PORT=18600 \\
  UPLOAD_IMAGE_SIZE=10Gi FILESYSTEM_OVERHEAD=0 \${TIMEWRAP:-} $BIN upload-server --root $D/upod 2>upload.log & pid=\$!
for i in \$(seq 200); do (echo > /dev/tcp/127.0.0.1/18600) 2>/dev/null && break; sleep 0.01; done
$CURL -T "\$1" https://127.0.0.1:18600/v1beta1/upload
wait \$pid
SH
cat > up-cdi.sh <<SH
set -e
$CURL -T "\$1" https://127.0.0.1:18602/v1beta1/upload
qemu-img convert -t none -O raw scratch.img out.raw
SH
sleep 0.3
PREP='rm -rf out.raw scratch.img upod; sync'
WARMUP=1
[ "${COLD:-0}" = 1 ] && WARMUP=0
TAG=upload
LIMITBIN=$(realpath "$(dirname "$BIN")/decodelimit")
. "$ROWS"
header
# The link's limit: the same upload to a server that drops it.
row upload-cdi "bash $D/up-ours.sh os.qcow2" "curl upload to a scratch file, then qemu-img convert -t none" "bash $D/up-cdi.sh os.qcow2" \
  write read:os.qcow2 both:os.qcow2 "cmd:upload-drop:$CURL -T os.qcow2 https://127.0.0.1:18601/" \
  "cmdwrite:upload-drop:$CURL -T os.qcow2 https://127.0.0.1:18601/"
row upload-rawxz "bash $D/up-ours.sh os.raw.xz" "$BIN convert os.raw.xz out.raw" "$BIN convert --no-progress os.raw.xz out.raw" \
  write read:os.raw.xz "cmd:xz-T2:sh -c 'xz -T2 -dc os.raw.xz > /dev/null'"
# Peak RSS of the server alone (the rows' RSS column is the whole script).
sh -c "$PREP"
for f in os.qcow2 os.raw.xz; do
  sh -c "$PREP"
  TIMEWRAP="/usr/bin/time -f %M -o $D/server-rss.txt" bash "$D/up-ours.sh" "$f"
  echo "server peak RSS ($f): $(( $(cat server-rss.txt) / 1024 )) MiB" >&2
done
