# Shared by the e2e-*.sh scripts: one comparison row of the results table,
# with the physical limit that bounds it, measured in the same run.
# The caller sets RUNS, WARMUP, PREP (run before every timed run and before
# the RSS run), TAG (prefix of the hyperfine JSON files), ONLY (labels to
# run; empty: all), COLD (1: the page cache is dropped before every run of
# ours and the anchor's, and a cold read of the input joins the limits),
# LIMITBIN (benches' decodelimit) and works in the bench directory.
#
# row LABEL OURS ANCHOR-LABEL ANCHOR [LIMIT...]
# LIMIT is one of (docs: benches/RESULTS.md, "How limits are measured"):
#   write        O_DIRECT writes of the row's allocated output bytes from a
#                page-cached file of real data (dd bs=4M oflag=direct)
#   read:FILE    COLD=1 only: one sequential read of FILE after dropping
#                the page cache
#   both:FILE    COLD=1 only: that read and the write at once, on the same
#                disk (one virtio device here: they share its bandwidth)
#   gz:FILE      single-core inflate of FILE into nothing (decodelimit gz)
#   qcow2:FILE   our qcow2 reader into nothing (compressed clusters on the
#                two decode threads the format allows; decodelimit qcow2)
#   cmd:NAME:CMD any other limit command (curl to /dev/null, xz -T2 -dc,
#                an upload to a server that drops it); with COLD=1 the page
#                cache is dropped before each run, as for ours
#   cmdwrite:NAME:CMD  COLD=1 only: CMD and the write at once (e.g. the
#                upload to a dropping server while the disk takes the
#                output: client and server share this machine's one disk)
#   info:SPEC    SPEC measured and reported in the notes, not part of the
#                row's limit (e.g. single-core decode where a stricter
#                two-core figure bounds the row)
# The row's limit is the largest of its limits: the time the machine needs
# for the slowest resource if every stage overlapped perfectly.

COLD=${COLD:-0}
if [ "$COLD" = 1 ]; then PREP="$PREP; echo 3 > /proc/sys/vm/drop_caches"; TAG="$TAG-cold"; fi
# Limits are measured once per script run and kept here (rows run in
# subshells, so a shell variable would not keep them).
LIMIT_CACHE=$(mktemp -d)

median() { # name cmd -> median seconds
  local name=$1 prep
  shift
  # hyperfine -N runs --prepare without a shell too: PREP goes in a script.
  prep=$LIMIT_CACHE/prep-$name.sh
  printf '%s\n' "$PREP" > "$prep"
  hyperfine -N --runs "$RUNS" --warmup "$WARMUP" --prepare "sh $prep" --export-json "$TAG-$name.json" "$@" >/dev/null 2>&1 ||
    hyperfine --runs "$RUNS" --warmup "$WARMUP" --prepare "sh $prep" --export-json "$TAG-$name.json" "$@" >/dev/null
  python3 -c "import json,sys; print('%.2f' % json.load(open(sys.argv[1]))['results'][0]['median'])" "$TAG-$name.json"
}
times() { # name -> every run's seconds
  python3 -c "import json,sys; print(', '.join('%.2f' % t for t in json.load(open(sys.argv[1]))['results'][0]['times']))" "$TAG-$1.json"
}
rss() { # cmd... -> peak RSS in MiB
  sh -c "$PREP"
  /usr/bin/time -f %M -o rss.txt "$@" >/dev/null 2>&1
  echo "$(( $(cat rss.txt) / 1024 ))"
}
allocated() { # bytes allocated by the output the last run left behind
  local f
  for f in out.raw pod/data/disk.img upod/data/disk.img out-1.raw; do
    [ -f "$f" ] && { echo $(( $(stat -c '%b * %B' "$f") )); return; }
  done
  echo 0
}
with_write() { # name cmd -> seconds of CMD and the row's write at once, cold
  # (called from limit_one: uses its $bytes and $id)
  local t
  limit_one write "$bytes" > /dev/null # makes lim.src
  t=$(PREP='rm -f lim.img; sync; echo 3 > /proc/sys/vm/drop_caches; cat lim.src > /dev/null' median "limit-$1-$id" \
    "sh -c '$2 & dd if=lim.src of=lim.img bs=4M oflag=direct status=none; wait'")
  rm -f lim.img
  echo "$t"
}
limit_one() { # spec bytes -> "seconds name"
  local spec=$1 bytes=$2 key t
  local id
  id=$(echo "$spec@$bytes" | md5sum | cut -c1-8)
  key=$LIMIT_CACHE/$id
  if [ -f "$key" ]; then cat "$key"; return; fi
  case $spec in
    write)
      # A file of real data, as long as the output's allocated bytes,
      # kept in the page cache so only the write is timed.
      if [ "$(stat -c %s lim.src 2>/dev/null || echo 0)" != "$bytes" ]; then
        { cat os.qcow2 os.qcow2 os.qcow2 os.qcow2 || true; } | head -c "$bytes" > lim.src
      fi
      t=$(PREP='rm -f lim.img; sync; cat lim.src > /dev/null' median "limit-write-$id" \
        "dd if=lim.src of=lim.img bs=4M oflag=direct status=none")
      rm -f lim.img
      t="$t write"
      ;;
    read:*)
      [ "$COLD" = 1 ] || { echo "0 -"; return; }
      t=$(PREP='sync; echo 3 > /proc/sys/vm/drop_caches' median "limit-read-$id" "$LIMITBIN read ${spec#read:}")
      t="$t read"
      ;;
    both:*)
      [ "$COLD" = 1 ] || { echo "0 -"; return; }
      t="$(with_write both "$LIMITBIN read ${spec#both:} > /dev/null") read+write"
      ;;
    gz:* | qcow2:*)
      t=$(PREP="cat ${spec#*:} > /dev/null" median "limit-${spec%%:*}-$id" "$LIMITBIN ${spec%%:*} ${spec#*:}")
      t="$t decode"
      ;;
    cmd:*)
      local rest=${spec#cmd:}
      local name=${rest%%:*} cprep=sync
      [ "$COLD" = 1 ] && cprep='sync; echo 3 > /proc/sys/vm/drop_caches'
      t=$(PREP=$cprep median "limit-$name-$id" "${rest#*:}")
      t="$t $name"
      ;;
    cmdwrite:*)
      [ "$COLD" = 1 ] || { echo "0 -"; return; }
      local rest=${spec#cmdwrite:}
      local name=${rest%%:*}
      t="$(with_write "$name" "${rest#*:}") $name+write"
      ;;
  esac
  echo "$t" | tee "$key"
}
row() { # label ours-cmd anchor-label anchor-cmd [limit...]: prints a table row, the individual times to stderr
  local label=$1 ours=$2 alabel=$3 anchor=$4 o a r m bytes l lim=0 limname=- s spec lr
  shift 4
  if [ -n "${ONLY:-}" ] && [[ " $ONLY " != *" $label "* ]]; then return; fi
  o=$(median "ours-$label" "$ours")
  a=$(median "anchor-$label" "$anchor")
  r=$(python3 -c "print('%.2f' % ($o / $a))")
  m=$(rss sh -c "$ours")
  bytes=$(allocated)
  for spec in "$@"; do
    [[ $spec == info:* ]] && continue
    l=$(limit_one "$spec" "$bytes")
    s=${l%% *}
    if python3 -c "import sys; sys.exit(0 if float(sys.argv[1]) > float(sys.argv[2]) else 1)" "$s" "$lim"; then
      lim=$s limname=${l#* }
    fi
  done
  if [ "$limname" = - ]; then lr=-; else lr="$(python3 -c "print('%.2f' % ($o / $lim))")x"; lim="$lim s"; fi
  echo "| \`$ours\` | $o s | \`$alabel\` | $a s | ${r}x | $limname | $lim | $lr | $m MiB |"
  echo "  times ($label): ours $(times "ours-$label"); anchor $(times "anchor-$label"); limits of $bytes output bytes: $(limits_said "$bytes" "$@")" >&2
}
limits_said() { # bytes spec... -> every limit of the row, for the notes
  local bytes=$1 spec out= l
  shift
  for spec in "$@"; do
    l=$(limit_one "${spec#info:}" "$bytes")
    [ "${l#* }" = - ] || out="$out ${l#* }=${l%% *}"
  done
  echo "${out# }"
}
header() {
  echo "| ours | median | anchor | median | ours/anchor | limit | limit median | ours/limit | peak RSS |"
  echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
}
