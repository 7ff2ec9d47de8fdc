# Shared by the e2e-*.sh scripts: one comparison row of the results table,
# with the physical limits that bound it, measured with the row and in
# turns with it: run 1 of ours, of the anchor and of every limit, then run
# 2 of each, and so on (benches/interleave.py), so the drift of this VM's
# disk lands on all of them alike instead of deciding a ratio.
# The caller sets RUNS, WARMUP, PREP (run before every timed run and before
# the RSS run), TAG (prefix of the JSON files of times), ONLY (labels to
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
# for the slowest resource if every stage overlapped perfectly. Limits are
# measured again for every row, in turns with it (not once per script).

COLD=${COLD:-0}
DROP='sync; echo 3 > /proc/sys/vm/drop_caches'
if [ "$COLD" = 1 ]; then PREP="$PREP; $DROP"; TAG="$TAG-cold"; fi
INTERLEAVE=$(realpath "$(dirname "${BASH_SOURCE[0]}")/interleave.py")
# The disk write every write limit times, and what comes before it: the
# source file in the page cache, so only the write is timed.
DD='dd if=lim.src of=lim.img bs=4M oflag=direct status=none'
WPREP='rm -f lim.img; sync; cat lim.src > /dev/null'

med() { # json file -> its median, seconds
  python3 -c "import json,sys; print('%.2f' % json.load(open(sys.argv[1]))['results'][0]['median'])" "$1"
}
times() { # json file -> every run's seconds
  python3 -c "import json,sys; print(', '.join('%.2f' % t for t in json.load(open(sys.argv[1]))['results'][0]['times']))" "$1"
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
make_src() { # bytes: lim.src, a file of real data as long as the output's allocated bytes
  if [ "$(stat -c %s lim.src 2>/dev/null || echo 0)" != "$1" ]; then
    { cat os.qcow2 os.qcow2 os.qcow2 os.qcow2 || true; } | head -c "$1" > lim.src
  fi
}
with_write() { # name cmd -> LNAME LPREP LCMD: CMD and the row's write at once, cold
  LNAME=$1+write LPREP="rm -f lim.img; $DROP; cat lim.src > /dev/null"
  LCMD="sh -c '$2 & $DD; wait'"
}
limit_triple() { # spec bytes -> LNAME LPREP LCMD (LNAME - when the spec does not apply here)
  local spec=$1 rest
  LNAME=- LPREP=: LCMD=:
  case $spec in
    write)
      make_src "$2"
      LNAME=write LPREP=$WPREP LCMD=$DD
      ;;
    read:*)
      [ "$COLD" = 1 ] || return 0
      LNAME=read LPREP=$DROP LCMD="$LIMITBIN read ${spec#read:}"
      ;;
    both:*)
      [ "$COLD" = 1 ] || return 0
      make_src "$2"
      with_write read "$LIMITBIN read ${spec#both:} > /dev/null"
      ;;
    gz:* | qcow2:*)
      LNAME=decode LPREP="cat ${spec#*:} > /dev/null" LCMD="$LIMITBIN ${spec%%:*} ${spec#*:}"
      ;;
    cmd:*)
      rest=${spec#cmd:}
      LNAME=${rest%%:*} LPREP=sync LCMD=${rest#*:}
      if [ "$COLD" = 1 ]; then LPREP=$DROP; fi
      ;;
    cmdwrite:*)
      [ "$COLD" = 1 ] || return 0
      make_src "$2"
      rest=${spec#cmdwrite:}
      with_write "${rest%%:*}" "${rest#*:}"
      ;;
  esac
  return 0
}
row() { # label ours-cmd anchor-cmd-label anchor-cmd [limit...]: prints a table row, the individual times to stderr
  local label=$1 ours=$2 alabel=$3 anchor=$4 o a r m bytes lim=0 limname=- spec info s lr said= each=
  shift 4
  if [ -n "${ONLY:-}" ] && [[ " $ONLY " != *" $label "* ]]; then return; fi
  # The RSS run first: it also leaves the output whose size the write
  # limits take.
  m=$(rss sh -c "$ours")
  bytes=$(allocated)
  local args=(ours "$PREP" "$ours" anchor "$PREP" "$anchor") names=() infos=()
  for spec in "$@"; do
    info=0
    [[ $spec == info:* ]] && info=1 spec=${spec#info:}
    limit_triple "$spec" "$bytes"
    [ "$LNAME" = - ] && continue
    args+=("lim-$LNAME" "$LPREP" "$LCMD")
    names+=("$LNAME")
    infos+=("$info")
  done
  python3 "$INTERLEAVE" --runs "$RUNS" --warmup "$WARMUP" --out "$TAG-$label" "${args[@]}"
  rm -f lim.img
  o=$(med "$TAG-$label-ours.json")
  a=$(med "$TAG-$label-anchor.json")
  r=$(python3 -c "print('%.2f' % ($o / $a))")
  local i
  for i in "${!names[@]}"; do
    s=$(med "$TAG-$label-lim-${names[$i]}.json")
    said="$said ${names[$i]}=$s"
    each="$each; ${names[$i]} $(times "$TAG-$label-lim-${names[$i]}.json")"
    if [ "${infos[$i]}" = 0 ] && python3 -c "import sys; sys.exit(0 if float(sys.argv[1]) > float(sys.argv[2]) else 1)" "$s" "$lim"; then
      lim=$s limname=${names[$i]}
    fi
  done
  if [ "$limname" = - ]; then lr=-; else lr="$(python3 -c "print('%.2f' % ($o / $lim))")x"; lim="$lim s"; fi
  echo "| \`$ours\` | $o s | \`$alabel\` | $a s | ${r}x | $limname | $lim | $lr | $m MiB |"
  echo "  times ($label, in turns): ours $(times "$TAG-$label-ours.json"); anchor $(times "$TAG-$label-anchor.json")$each; limits of $bytes output bytes:$said" >&2
}
header() {
  echo "| ours | median | anchor | median | ours/anchor | limit | limit median | ours/limit | peak RSS |"
  echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
}
