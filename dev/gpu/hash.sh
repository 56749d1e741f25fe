# Sourced by prepare.sh (here) and env.sh (on the device): one hash of the code that runs, so that
# the device can tell whether the tree it got is the commit that .gpu/COMMIT names.
tree_hash() {
    find akt_lib dev -type f ! -path '*/__pycache__/*' ! -name '*.pyc' -print0 | LC_ALL=C sort -z \
        | xargs -0 sha256sum | sha256sum | cut -c1-16
}
