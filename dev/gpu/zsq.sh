#!/usr/bin/env bash
# On the device machine: run zero-shot rows for one command's worth of time, then put what came of
# them under $OUT for the `device` tool to bring back (dev/gpu/collect.sh files them here).
#
#   bash dev/gpu/zsq.sh adadfq-bs200-rfd0 --bits w4a4 --seeds 0
#   BUDGET=150 RECORDS=results/zsq-diag bash dev/gpu/zsq.sh adadfq+akt --bits w4a4 --seeds 0 --keep-epochs 7 8 9
#
# Everything after the script's name goes to `python -m akt_lib zsq run`, which this script gives
# --profile ($PROFILE, default paper), --out ($RECORDS, default results/zsq/$PROFILE), --device
# ($DEVICE, default cuda: a machine without a working GPU is refused, not used), --time-budget
# ($BUDGET seconds of training, default 480: a 600 s command also starts Python, builds the step and
# evaluates) and --no-progress. A paper-profile seed takes longer than one call: name one run per
# call. A run that the budget stops writes its checkpoint; carrying it into the next call resumes it.
#
# Back under $OUT (the tool brings back at most 8 files of at most 16 MiB, 64 MiB in all, two
# folders deep), in this order while they fit:
#   $OUT/log.txt              the command's output; its first line names the records folder
#   $OUT/records/*.json       every record this call wrote or changed
#   $OUT/checkpoints/*.pt     the checkpoints of the runs that are not complete, then kept epochs
set -uo pipefail
cd "$(dirname "$0")/../.."
[ -n "${OUT:-}" ] || { echo "dev/gpu/zsq.sh: OUT is not set: this runs on the device machine" >&2; exit 2; }
source dev/gpu/env.sh || exit 2
PROFILE="${PROFILE:-paper}"
RECORDS="${RECORDS:-results/zsq/$PROFILE}"
mkdir -p "$OUT/records" "$OUT/checkpoints" "$RECORDS/checkpoints"
echo "RECORDS=$RECORDS" > "$OUT/log.txt"
before="$(mktemp)"  # size and mtime of every record and checkpoint before the run: what changed goes back
python3 - "$RECORDS" "$before" <<'PY'
import json, sys
from pathlib import Path
files = [*Path(sys.argv[1]).glob("*.json"), *Path(sys.argv[1]).glob("checkpoints/*.pt")]
json.dump({str(p): [p.stat().st_size, p.stat().st_mtime_ns] for p in files}, open(sys.argv[2], "w"))
PY
python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available())' | tee -a "$OUT/log.txt"
python3 -m akt_lib zsq run "$@" --profile "$PROFILE" --out "$RECORDS" --device "${DEVICE:-cuda}" \
    --time-budget "${BUDGET:-480}" --no-progress 2>&1 | tee -a "$OUT/log.txt"
rc=${PIPESTATUS[0]}
python3 - "$RECORDS" "$before" "$OUT" <<'PY' 2>&1 | tee -a "$OUT/log.txt"
import json, shutil, sys
from pathlib import Path
records, out = Path(sys.argv[1]), Path(sys.argv[3])
before = json.load(open(sys.argv[2]))
changed = lambda p: before.get(str(p)) != [p.stat().st_size, p.stat().st_mtime_ns]
recs = [p for p in sorted(records.glob("*.json")) if changed(p)]
status = {p.stem: json.loads(p.read_text()).get("status") for p in recs}
own = [records / "checkpoints" / f"{s}.pt" for s, st in status.items() if st != "complete"]  # to resume
kept = [k for s in status for k in sorted((records / "checkpoints").glob(f"{s}-epoch*.pt"))]  # --keep-epochs
files, size, left = 1, (out / "log.txt").stat().st_size + 2**20, []  # log.txt, and 1 MiB for what it still gets
for p in recs + [c for c in own + kept if c.exists() and changed(c)]:
    n = p.stat().st_size
    if files + 1 > 8 or size + n > 63 * 2**20 or n > 16 * 2**20:
        left.append(p.name)
        continue
    shutil.copy2(p, out / ("records" if p.suffix == ".json" else "checkpoints") / p.name)
    files, size = files + 1, size + n
    print(f"back: {p.name} ({status.get(p.stem, 'checkpoint')}, {n / 2**20:.1f} MiB)")
if left:
    print(f"LEFT ON THE DEVICE (over what one call brings back: 8 files, 16 MiB each, 64 MiB): {', '.join(left)}",
          file=sys.stderr)
PY
echo "zsq exit code $rc (0 complete, 3 stopped: collect, carry the checkpoints and rerun the same line," \
     "1 failed, 2 refused)" | tee -a "$OUT/log.txt"
exit "$rc"
