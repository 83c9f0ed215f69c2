#!/usr/bin/env bash
# Split one photo library across several hosts with `tagger score --shard I/N`.
#
#   examples/score_fleet.sh PHOTOS RESULTS HOST...
#
# Host i of N runs `tagger score PHOTOS --shard i/N --output RESULTS/part-i.jsonl` over ssh
# (a host named `-` runs here instead, which is how to try the script on one machine). PHOTOS
# and RESULTS are paths as each host sees them, typically a shared mount; the mount point may
# differ between hosts only if you run the script per host yourself: a file's shard is a hash
# of its path relative to PHOTOS, so it is the same on every machine. Together the parts hold
# one record per file, each part in walk order; the script concatenates them into
# RESULTS/all.jsonl when every host is done (set MERGE=0 to skip).
#
# Environment: TAGGER (the binary on the hosts, default `tagger`), SSH (default `ssh`), and
# any TAGGER_* setting to pass along (e.g. TAGGER_JOBS, TAGGER_MODEL, TAGGER_DECODE).
#
# Exit status: 0 every file scored on every host; 1 some files failed (see the error records:
# grep '"error"' RESULTS/all.jsonl); 2 a host failed outright (usage error, unreachable, ...).
set -euo pipefail

if [ "$#" -lt 3 ]; then
    sed -n '2,10p' "$0" >&2
    exit 2
fi
photos=$1
results=$2
shift 2
hosts=("$@")
n=${#hosts[@]}
tagger=${TAGGER:-tagger}
ssh=${SSH:-ssh}

# TAGGER_* settings from this shell, passed to every host as `env NAME=VALUE`.
settings=()
while IFS= read -r name; do
    settings+=("$name=${!name}")
done < <(compgen -e | grep '^TAGGER_' | grep -v '^TAGGER$' || true)

pids=()
for i in "${!hosts[@]}"; do
    host=${hosts[$i]}
    command=(env ${settings[@]+"${settings[@]}"} "$tagger" score "$photos" --shard "$i/$n"
             --format jsonl --output "$results/part-$i.jsonl")
    if [ "$host" = "-" ]; then
        "${command[@]}" 2> >(sed "s/^/[shard $i local] /" >&2) &
    else
        # ssh joins its arguments into one remote shell command: quote each word.
        "$ssh" -o BatchMode=yes "$host" "$(printf '%q ' "${command[@]}")" \
            2> >(sed "s/^/[shard $i $host] /" >&2) &
    fi
    pids+=("$!")
done

status=0
for i in "${!pids[@]}"; do
    rc=0
    wait "${pids[$i]}" || rc=$?
    case $rc in
        0) ;;
        1) echo "shard $i/$n (${hosts[$i]}): some files failed" >&2
           [ "$status" -lt 1 ] && status=1 ;;
        *) echo "shard $i/$n (${hosts[$i]}): failed with exit status $rc" >&2
           status=2 ;;
    esac
done

if [ "${MERGE:-1}" = 1 ] && [ "$status" -lt 2 ]; then
    parts=()
    for i in $(seq 0 $((n - 1))); do parts+=("$results/part-$i.jsonl"); done
    cat "${parts[@]}" > "$results/all.jsonl.tmp" && mv "$results/all.jsonl.tmp" "$results/all.jsonl"
    echo "$(wc -l < "$results/all.jsonl") records in $results/all.jsonl" >&2
fi
exit "$status"
