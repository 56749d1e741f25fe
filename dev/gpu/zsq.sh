#!/usr/bin/env bash
# On the device machine: run zero-shot rows for one command's worth of time, then put what came of
# them under $OUT for the `device` tool to bring back (dev/gpu/collect.sh files them here).
#
#   bash dev/gpu/zsq.sh adadfq-bs200-rfd0 --bits w4a4 --seeds 0
#   BUDGET=300 RECORDS=results/zsq-diag bash dev/gpu/zsq.sh adadfq+akt --bits w4a4 --seeds 0 --keep-epochs 6 7
#
# Everything after the script's name goes to `python -m akt_lib zsq run`, which this script gives
# --profile ($PROFILE, default paper), --out ($RECORDS, default results/zsq/$PROFILE), --time-budget
# ($BUDGET seconds of training, default 480: a 600 s command also starts Python, builds the step and
# evaluates) and --no-progress. A run that the budget stops writes its checkpoint; carrying that
# checkpoint folder into the next call resumes it (dev/gpu/README.md).
#
# Back under $OUT (the tool brings back at most 8 files of at most 16 MiB, two folders deep):
#   $OUT/records/*.json       every record this call wrote or changed
#   $OUT/checkpoints/*.pt     the checkpoints of runs that are not complete, and kept epochs
#   $OUT/log.txt              the command's output
set -uo pipefail
cd "$(dirname "$0")/../.."
source dev/gpu/env.sh || exit 2
: "${OUT:?OUT is not set: this runs on the device machine, where the device tool sets it}"
PROFILE="${PROFILE:-paper}"
RECORDS="${RECORDS:-results/zsq/$PROFILE}"
BUDGET="${BUDGET:-480}"
mkdir -p "$OUT/records" "$OUT/checkpoints" "$RECORDS"
stamp="$(mktemp)"  # records and checkpoints newer than this are this call's
python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available())'
python3 -m akt_lib zsq run "$@" --profile "$PROFILE" --out "$RECORDS" --time-budget "$BUDGET" --no-progress \
    2>&1 | tee "$OUT/log.txt"
rc=${PIPESTATUS[0]}
python3 - "$RECORDS" "$stamp" "$OUT" <<'PY'
import json, os, shutil, sys
from pathlib import Path
records, stamp, out = Path(sys.argv[1]), os.path.getmtime(sys.argv[2]), Path(sys.argv[3])
sent, size = 0, 0
for rec in sorted(records.glob("*.json")):
    if rec.stat().st_mtime < stamp:
        continue
    status = json.loads(rec.read_text()).get("status")
    shutil.copy2(rec, out / "records" / rec.name)
    sent, size = sent + 1, size + rec.stat().st_size
    print(f"back: records/{rec.name} ({status})")
    ckpts = [] if status == "complete" else [records / "checkpoints" / f"{rec.stem}.pt"]
    ckpts += sorted((records / "checkpoints").glob(f"{rec.stem}-epoch*.pt"))  # --keep-epochs
    for ck in ckpts:
        if ck.exists() and ck.stat().st_mtime >= stamp:
            shutil.copy2(ck, out / "checkpoints" / ck.name)
            sent, size = sent + 1, size + ck.stat().st_size
            print(f"back: checkpoints/{ck.name} ({ck.stat().st_size / 2**20:.1f} MiB)")
if sent + 1 > 8 or size > 60 * 2**20:  # + log.txt
    print(f"WARNING: {sent} files, {size / 2**20:.0f} MiB under $OUT: over what the device tool brings back "
          "(8 files, 64 MiB); ask for fewer runs or kept epochs per call", file=sys.stderr)
PY
echo "zsq exit code $rc (0 complete, 3 stopped: carry the checkpoints and rerun the same line, 1 failed, 2 refused)"
exit "$rc"
