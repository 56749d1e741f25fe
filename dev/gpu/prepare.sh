#!/usr/bin/env bash
# Here, before a `device` call: fill .gpu/ (ignored by git) with what the device machine needs and
# does not get with the tree: the test split of CIFAR-10 (JPEG q75) (the machine cannot reach
# ../shared), the commit (the copy that travels has no .git) and a hash of akt_lib/ and dev/, which
# env.sh checks there. Refuses a tree whose library has uncommitted changes, since every record
# written there would name a commit that is not the code that ran.
#
# The train split (46 MB; label-free rows, teachers) is not put here: what travels is at most 64 MiB,
# the tree is about 15 MiB, this 9 MiB and a paper checkpoint 14 MiB (dev/gpu/README.md).
set -euo pipefail
cd "$(dirname "$0")/../.."
[ $# -eq 0 ] || { echo "usage: bash dev/gpu/prepare.sh" >&2; exit 2; }
if [ -n "$(git status --porcelain -- akt_lib dev)" ]; then
    echo "dev/gpu/prepare.sh: akt_lib/ or dev/ has uncommitted changes; commit them first, so that the" \
         "records name the code that ran:" >&2
    git status --short -- akt_lib dev >&2
    exit 2
fi
src="${AKT_DATA_DIR:-../shared/data}/cifar10-jpeg"
[ -f "$src/test.npz" ] || { echo "dev/gpu/prepare.sh: no $src/test.npz (set AKT_DATA_DIR)" >&2; exit 2; }
mkdir -p .gpu/data/cifar10-jpeg
cmp -s "$src/test.npz" .gpu/data/cifar10-jpeg/test.npz || cp "$src/test.npz" .gpu/data/cifar10-jpeg/test.npz
rm -f .gpu/data/cifar10-jpeg/train.npz
git rev-parse HEAD > .gpu/COMMIT
source dev/gpu/hash.sh
tree_hash > .gpu/TREE
echo "prepared .gpu for commit $(git rev-parse --short HEAD) ($(du -sh .gpu | cut -f1)); carry \".gpu\" and the" \
     "checkpoints that dev/gpu/collect.py lists"
