# Sourced on the device machine (the `device` tool's `run`), in the repository root: the environment
# every call there uses. The machine has its own PyTorch (not the CI pin); the copy of the tree that
# travels has no .git, so the commit comes from .gpu/COMMIT, which dev/gpu/prepare.sh wrote here,
# with a hash of akt_lib/ and dev/ that must match the tree that arrived.
if [ ! -f .gpu/COMMIT ] || [ ! -f .gpu/TREE ] || [ ! -f .gpu/data/cifar10-jpeg/test.npz ]; then
    echo "dev/gpu/env.sh: .gpu/ is incomplete: run dev/gpu/prepare.sh before the call, and carry .gpu" >&2
    return 2 2>/dev/null || exit 2
fi
source dev/gpu/hash.sh
if [ "$(tree_hash)" != "$(cat .gpu/TREE)" ]; then
    echo "dev/gpu/env.sh: akt_lib/ or dev/ differ from commit $(cut -c1-7 .gpu/COMMIT) that .gpu/COMMIT names:" \
         "commit, rerun dev/gpu/prepare.sh, then call again (the records would name the wrong code)" >&2
    return 2 2>/dev/null || exit 2
fi
export AKT_COMMIT="$(cat .gpu/COMMIT)"
export AKT_DATA_DIR="$PWD/.gpu/data"
export AKT_CACHE_DIR="${AKT_CACHE_DIR:-/tmp/akt-cache}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 PYTHONHASHSEED=0 MPLBACKEND=Agg
