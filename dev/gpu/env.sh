# Sourced on the device machine (the `device` tool's `run`), in the repository root: the environment
# every call there uses. The machine has its own PyTorch (not the CI pin); the copy of the tree that
# travels has no .git, so the commit comes from .gpu/COMMIT, which dev/gpu/prepare.sh wrote here.
if [ ! -f .gpu/COMMIT ] || [ ! -f .gpu/data/cifar10-jpeg/test.npz ]; then
    echo "dev/gpu/env.sh: .gpu/COMMIT or .gpu/data is missing: run dev/gpu/prepare.sh before the call," \
         "and carry .gpu" >&2
    return 2 2>/dev/null || exit 2
fi
export AKT_COMMIT="$(cat .gpu/COMMIT)"
export AKT_DATA_DIR="$PWD/.gpu/data"
export AKT_CACHE_DIR="${AKT_CACHE_DIR:-/tmp/akt-cache}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 PYTHONHASHSEED=0 MPLBACKEND=Agg
