#!/usr/bin/env bash
# Here, after a `device` call of dev/gpu/zsq.sh: file what came back into the records folder that
# the call wrote to (the first line of its log.txt; or RECORDS), so that the book reads the records
# and the next call resumes the unfinished runs. Then list what that next call must carry.
#
#   bash dev/gpu/collect.sh FILES_AT [RECORDS]
#
# A complete record here is never replaced by an unfinished one (e.g. a diagnostic rerun filed into
# the wrong folder). A run that came back complete loses its checkpoint here: carried into a later
# call, an older checkpoint would only be a trap.
set -euo pipefail
[ $# -ge 1 ] && [ $# -le 2 ] || { echo "usage: bash dev/gpu/collect.sh FILES_AT [RECORDS]" >&2; exit 2; }
back="$(cd "$1" && pwd)"
cd "$(dirname "$0")/../.."
[ -f "$back/log.txt" ] && [ -d "$back/records" ] || {
    echo "dev/gpu/collect.sh: $back has no log.txt and records/: not what dev/gpu/zsq.sh leaves" >&2; exit 2; }
records="${2:-$(sed -n 's/^RECORDS=//p' "$back/log.txt" | head -n 1)}"
[ -n "$records" ] || { echo "dev/gpu/collect.sh: no RECORDS= line in $back/log.txt; name the folder" >&2; exit 2; }
mkdir -p "$records/checkpoints"
status_of() { python3 -c 'import json, sys; print(json.load(open(sys.argv[1])).get("status"))' "$1"; }
refused=0
shopt -s nullglob
for f in "$back"/records/*.json; do
    name="$(basename "$f")" stem="$(basename "$f" .json)" new="$(status_of "$f")"
    if [ -f "$records/$name" ] && [ "$(status_of "$records/$name")" = complete ] && [ "$new" != complete ]; then
        echo "NOT FILED: $records/$name is complete here; the $new one that came back stays in $back" >&2
        refused=1
        continue
    fi
    install -m 644 "$f" "$records/"
    [ "$new" = complete ] && rm -f "$records/checkpoints/$stem.pt"
    echo "$records/$name: $(python3 -c 'import json, sys; r = json.load(open(sys.argv[1]))
print(r["status"], "-", len(r["history"]), "of", r["config"].get("epochs"), "epochs, best", r.get("best_acc"))' "$f")"
done
for f in "$back"/checkpoints/*.pt; do
    stem="$(basename "$f" .pt)"
    if [[ "$stem" != *-epoch[0-9][0-9][0-9] && -f "$records/$stem.json" ]] \
            && [ "$(status_of "$records/$stem.json")" = complete ]; then
        continue  # the checkpoint of a run that is complete here: not kept
    fi
    install -m 644 "$f" "$records/checkpoints/"
    echo "$records/checkpoints/$(basename "$f")"
done
grep -v '^|' "$back/log.txt" | tail -n 6 || true
echo
echo "commit the records: git add $records/*.json"
carry=(".gpu")
for r in "$records"/*.json; do
    stem="$(basename "$r" .json)"
    if [ "$(status_of "$r")" != complete ] && [ -f "$records/checkpoints/$stem.pt" ]; then
        carry+=("$records/checkpoints/$stem.pt")
    fi
done
printf 'the unfinished runs resume from: ['; printf '"%s", ' "${carry[@]}" | sed 's/, $//'; printf ']\n'
tree=$(git ls-files -z --cached --others --exclude-standard | xargs -0 du -cb 2>/dev/null | tail -n 1 | cut -f1)
size=$(( tree + $(du -cb "${carry[@]}" | tail -n 1 | cut -f1) ))
echo "(the tree and all of these: $(( size / 1048576 )) MiB, of the 64 MiB a call may send; carry .gpu and the" \
     "checkpoints of the runs the call names, two at most)"
exit "$refused"
