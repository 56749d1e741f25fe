#!/usr/bin/env bash
# Here, before a `device` call: fill .gpu/ (ignored by git) with what the device machine needs and
# does not get with the tree: the data (the machine cannot reach ../shared) and the commit (the copy
# that travels has no .git). Refuses a tree whose library has uncommitted changes, since every record
# written there would name a commit that is not the code that ran.
#
#   bash dev/gpu/prepare.sh              # the test split: enough for the zero-shot rows and bench
#   bash dev/gpu/prepare.sh --train      # also the train split (label-free rows, teachers): +46 MB
set -euo pipefail
cd "$(dirname "$0")/../.."
splits=(test)
case "${1:-}" in
    "") ;;
    --train) splits+=(train) ;;
    *) echo "usage: bash dev/gpu/prepare.sh [--train]" >&2; exit 2 ;;
esac
if [ -n "$(git status --porcelain -- akt_lib dev)" ]; then
    echo "dev/gpu/prepare.sh: akt_lib/ or dev/ has uncommitted changes; commit them first, so that the" \
         "records name the code that ran:" >&2
    git status --short -- akt_lib dev >&2
    exit 2
fi
src="${AKT_DATA_DIR:-../shared/data}/cifar10-jpeg"
mkdir -p .gpu/data/cifar10-jpeg
for s in "${splits[@]}"; do
    [ -f "$src/$s.npz" ] || { echo "dev/gpu/prepare.sh: no $src/$s.npz (set AKT_DATA_DIR)" >&2; exit 2; }
    cmp -s "$src/$s.npz" ".gpu/data/cifar10-jpeg/$s.npz" || cp "$src/$s.npz" ".gpu/data/cifar10-jpeg/$s.npz"
done
[ " ${splits[*]} " == *" train "* ] || rm -f .gpu/data/cifar10-jpeg/train.npz  # keep the carry small
git rev-parse HEAD > .gpu/COMMIT
echo "prepared .gpu for commit $(git rev-parse --short HEAD): $(du -sh .gpu | cut -f1);" \
     "carry \".gpu\" (and a records folder's checkpoints/ to resume runs)"
