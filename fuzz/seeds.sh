#!/usr/bin/env bash
# Makes the seed corpora in fuzz/seeds/ with the tools the tests use as
# oracles (qemu-img, qemu-io, gzip, xz, zstd, GNU tar). The seeds are
# committed; run this again only to change them. Each stays under 64 KiB.
set -euo pipefail
cd "$(dirname "$0")"
t=$(mktemp -d)
trap 'rm -rf "$t"' EXIT
rm -rf seeds
mkdir -p seeds/{qcow2,layers,tar,registry,upload}

q() { # name size create-options qemu-io-commands...
  local name=$1 size=$2 opts=$3
  shift 3
  qemu-img create -q -f qcow2 -o "$opts" "$t/$name" "$size"
  local args=()
  for c in "$@"; do args+=(-c "$c"); done
  ((${#args[@]})) && qemu-io -f qcow2 "${args[@]}" "$t/$name" >/dev/null
  cp "$t/$name" "seeds/qcow2/$name"
}
q c512 64k cluster_size=512 "write -P 0x11 0 1k" "write -z 4k 512" "write -c -P 0x22 8k 512"
q c4k-v2 256k cluster_size=4096,compat=0.10 "write -P 0x5a 0 8k" "write -P 0x44 100k 4k"
q c4k-comp 256k cluster_size=4096 "write -c -P 0x33 0 4k" "write -c -P 0x34 4k 4k" "write -P 0x35 64k 4k"
q c16k-ext 512k cluster_size=16384,extended_l2=on "write -P 0x66 1k 2k" "write -z 32k 1k"
q c4k-zstd 128k cluster_size=4096,compression_type=zstd "write -c -P 0x77 0 4k"
q c512-snap 32k cluster_size=512 "write -P 0x11 0 1k"
qemu-img snapshot -c s1 "$t/c512-snap"
qemu-io -f qcow2 -c "write -P 0x12 512 512" "$t/c512-snap" >/dev/null
cp "$t/c512-snap" seeds/qcow2/c512-snap

head -c 6000 /dev/urandom > "$t/r"
printf 'hello disk\n%.0s' {1..200} >> "$t/r"
cp "$t/r" seeds/layers/raw
gzip -c "$t/r" > seeds/layers/r.gz
xz -c --check=crc64 "$t/r" > seeds/layers/r.xz
zstd -q -c "$t/r" > seeds/layers/r.zst
gzip -c seeds/layers/r.gz > seeds/layers/nested.gz
gzip -c seeds/qcow2/c512 > seeds/layers/qcow2.gz

mkdir -p "$t/tree/dir/sub" "$t/tree/usr/lib"
echo hello > "$t/tree/dir/file.txt"
echo lib > "$t/tree/usr/lib/x.so"
ln -s usr/lib "$t/tree/lib"
ln -s ../file.txt "$t/tree/dir/sub/up"
ln "$t/tree/dir/file.txt" "$t/tree/dir/hard"
long=$(printf 'n%.0s' {1..150})
echo long > "$t/tree/dir/$long"
truncate -s 64k "$t/tree/sparse" && printf data | dd of="$t/tree/sparse" bs=1 seek=32768 conv=notrunc status=none
for fmt in gnu pax ustar; do
  tar --format=$fmt -C "$t/tree" -cf "seeds/tar/$fmt.tar" --exclude=sparse $( [ $fmt = ustar ] && echo --exclude="$long" ) .
done
tar --format=pax --sparse -C "$t/tree" -cf seeds/tar/pax-sparse.tar sparse
tar --format=gnu --sparse -C "$t/tree" -cf seeds/tar/gnu-sparse.tar sparse

# Registry: manifests, an index, a config, and container-disk layers (two
# layers joined by the target's 0xff 0x00 0xff separator: a whiteout above).
registry() {
  local r=seeds/registry d=sha256:$(printf 'a%.0s' {1..64})
  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":2},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"%s","size":10}]}' $d $d > $r/manifest.json
  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"%s","size":1,"platform":{"architecture":"amd64","os":"linux"}},{"digest":"%s","size":1,"platform":{"architecture":"arm64","os":"linux","variant":"v8"}}]}' $d $d > $r/index.json
  printf '{"architecture":"amd64","os":"linux","config":{"Env":["TEST_KUBEVIRT_IO_TEST=x"],"Labels":{"containers.bootc":"1"}}}' > $r/config.json
  mkdir -p "$t/cd/disk"
  cp seeds/qcow2/c512 "$t/cd/disk/disk.qcow2"
  tar --format=gnu -C "$t/cd" -cf $r/layer.tar disk
  gzip -c $r/layer.tar > $r/layer.tar.gz
  mkdir -p "$t/wh/disk" && : > "$t/wh/disk/.wh.disk.qcow2" && printf x > "$t/wh/disk/new.img"
  tar --format=gnu -C "$t/wh" -cf "$t/wh.tar" disk
  { cat $r/layer.tar; printf '\xff\x00\xff'; cat "$t/wh.tar"; } > $r/two-layers
}
registry
# Upload forms (boundary B, as the upload_form target uses).
printf -- '--B\r\nContent-Disposition: form-data; name="other"\r\n\r\nx\r\n--B\r\nContent-Disposition: form-data; name="file"; filename="d.img"\r\nContent-Type: application/octet-stream\r\n\r\nDISK-BYTES\r\n--B--\r\n' > seeds/upload/form
printf -- '--B\r\nContent-Disposition: form-data; name="file"\r\n\r\n\r\n--B\r\nContent-Disposition: form-data; name="file"\r\n\r\nsecond\r\n--B--\r\n' > seeds/upload/two-files
ls -la seeds/*
