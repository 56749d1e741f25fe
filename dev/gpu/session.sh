#!/usr/bin/env bash
# On the device machine: zero-shot runs in the background of a warm machine for a whole session
# (dev/gpu/session.py says how; dev/gpu/README.md when).
#
#   bash dev/gpu/session.sh start ZSQ_RUN_ARGS...   # e.g. adadfq+akt --bits w4a4 --seeds 1 2 --jobs 2
#   bash dev/gpu/session.sh wait SECONDS            # report, then records and checkpoints under $OUT
#   bash dev/gpu/session.sh stop                    # stop the runs (checkpoints written), then the same
#
# The command's output also goes to $OUT/log.txt.
set -uo pipefail
cd "$(dirname "$0")/../.."
[ -n "${OUT:-}" ] || { echo "dev/gpu/session.sh: OUT is not set: this runs on the device machine" >&2; exit 2; }
# start and run use this tree (its library must be the commit .gpu/COMMIT names); wait, stop and send
# read only $WORK, so an edit here during a session cannot keep them from sending what the runs wrote.
case "${1:-}" in
    start|run) source dev/gpu/env.sh || exit 2 ;;
    *) export PYTHONUNBUFFERED=1 ;;
esac
python3 dev/gpu/session.py "$@" 2>&1 | tee -a "$OUT/log.txt"
exit "${PIPESTATUS[0]}"
