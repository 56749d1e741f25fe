#!/usr/bin/env bash
# Here, after a `device` call of dev/gpu/zsq.sh: file what came back into the records folder, so that
# the book reads the records and the next call (carrying <folder>/checkpoints) resumes the runs.
#
#   bash dev/gpu/collect.sh /path/from/files_at [results/zsq/paper]
set -euo pipefail
cd "$(dirname "$0")/../.."
[ $# -ge 1 ] && [ $# -le 2 ] || { echo "usage: bash dev/gpu/collect.sh FILES_AT [RECORDS]" >&2; exit 2; }
back="$1"; records="${2:-results/zsq/paper}"
[ -d "$back/records" ] || { echo "dev/gpu/collect.sh: $back/records is missing: not a zsq.sh call's files?" >&2; exit 2; }
mkdir -p "$records/checkpoints"
shopt -s nullglob
for f in "$back"/records/*.json; do
    install -m 644 "$f" "$records/"
    echo "$records/$(basename "$f"): $(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(r["status"], "epochs", len(r["history"]), "of", r["config"].get("epochs"), "best", r.get("best_acc"))' "$f")"
done
for f in "$back"/checkpoints/*.pt; do
    install -m 644 "$f" "$records/checkpoints/"
    echo "$records/checkpoints/$(basename "$f")"
done
[ -f "$back/log.txt" ] && { grep -v "^|" "$back/log.txt" | tail -n 5; }
echo "commit the records (git add $records/*.json); carry $records/checkpoints in the next call to resume"
