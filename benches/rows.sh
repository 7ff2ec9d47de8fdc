# Shared by e2e.sh and e2e-http.sh: one comparison row of the results table.
# The caller sets RUNS, WARMUP, PREP (run before every timed run and before
# the RSS run), TAG (prefix of the hyperfine JSON files) and ONLY (labels to
# run; empty: all), and works in the bench directory.

median() { # name cmd -> median seconds
  local name=$1; shift
  hyperfine -N --runs "$RUNS" --warmup "$WARMUP" --prepare "$PREP" --export-json "$TAG-$name.json" "$@" >/dev/null 2>&1 ||
    hyperfine --runs "$RUNS" --warmup "$WARMUP" --prepare "$PREP" --export-json "$TAG-$name.json" "$@" >/dev/null
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
row() { # label ours-cmd anchor-label anchor-cmd: prints a table row, the individual times to stderr
  local label=$1 ours=$2 alabel=$3 anchor=$4 o a r m
  if [ -n "${ONLY:-}" ] && [[ " $ONLY " != *" $label "* ]]; then return; fi
  o=$(median "ours-$label" "$ours")
  a=$(median "anchor-$label" "$anchor")
  r=$(python3 -c "print('%.2f' % ($o / $a))")
  m=$(rss sh -c "$ours")
  echo "| \`$ours\` | $o s | \`$alabel\` | $a s | ${r}x | $m MiB |"
  echo "  times ($label): ours $(times "ours-$label"); anchor $(times "anchor-$label")" >&2
}
