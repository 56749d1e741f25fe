"""Here, after a `device` call of dev/gpu/session.sh: file what came back, then say what to carry.

    python3 dev/gpu/collect.py FILES_AT

Records go to the folder they came from (results/zsq/paper/...), checkpoints (ckpt/<n>.pt, named
by the archive's manifest.json) to its ignored checkpoints/ folder, the logs to .gpu-logs/
(ignored). Everything is checked before anything is filed. A record here is never replaced by one that
is behind it: an unfinished one over a complete one (a diagnostic rerun of a finished run has the
same name), or one with fewer epochs (an earlier call's files collected after a later call's); nor
is a checkpoint older than the record here filed (a resume would roll the run back). A run that
came back complete loses its checkpoint here: carried into a later call, an older checkpoint would
only be a trap. Exit 1 when something was not filed, 2 when FILES_AT is not what
session.sh leaves.
"""

from __future__ import annotations

import io
import json
import sys
import tarfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from session import MIB, folder_slug  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SEND_LIMIT = 64 * MIB  # what one call may send: the tree and the carried paths


def load(path: Path) -> dict | None:
    try:
        r = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return r if isinstance(r, dict) and "history" in r else None


def summary(r: dict) -> str:
    return (f"{r.get('status')} - {len(r['history'])} of {r.get('config', {}).get('epochs')} epochs, "
            f"best {r.get('best_acc')}")


def tree_bytes(root: Path) -> int:
    """What a call sends of the tree: tracked files and untracked ones git does not ignore."""
    import subprocess
    names = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=root,
                           capture_output=True, check=True).stdout.split(b"\0")
    return sum((root / n.decode()).stat().st_size for n in names if n and (root / n.decode()).is_file())


def _install(data: bytes, dest: Path) -> None:
    """Write ``dest`` whole or not at all (a temporary file, then a rename)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    tmp.write_bytes(data)
    tmp.replace(dest)


def main(argv: list[str], root: Path = ROOT) -> int:
    if len(argv) != 1:
        print("usage: python3 dev/gpu/collect.py FILES_AT", file=sys.stderr)
        return 2
    back = Path(argv[0])
    if not (back / "records.tgz").is_file():
        print(f"dev/gpu/collect.py: {back} has no records.tgz: not what dev/gpu/session.sh leaves", file=sys.stderr)
        return 2
    # Everything is checked before anything is filed: a bad archive files nothing.
    records, logs_in, manifest = {}, {}, []
    with tarfile.open(back / "records.tgz") as tar:
        for m in tar.getmembers():
            path = Path(m.name)
            if m.isdir() and not path.is_absolute() and ".." not in path.parts:
                continue
            if not m.isfile() or path.is_absolute() or ".." in path.parts:
                print(f"dev/gpu/collect.py: refusing archive member {m.name!r}", file=sys.stderr)
                return 2
            data = tar.extractfile(m).read()
            if m.name == "manifest.json":
                manifest = json.loads(data)
            elif path.parts[0] == "logs":
                logs_in[path] = data
            else:
                try:
                    folder_slug(str(path.parent))  # a folder under results/, or refused
                except SystemExit as e:
                    print(f"dev/gpu/collect.py: refusing archive member {m.name!r}: {e}", file=sys.stderr)
                    return 2
                records[path] = data
    for entry in manifest:
        try:
            folder_slug(entry["folder"])
            if Path(entry["name"]).name != entry["name"] or not entry["name"].endswith(".pt") \
                    or not (back / entry["file"]).is_file():
                raise SystemExit("not a checkpoint that came back")
        except (SystemExit, KeyError, TypeError) as e:
            print(f"dev/gpu/collect.py: refusing manifest entry {entry!r}: {e}", file=sys.stderr)
            return 2

    refused, folders, behind = 0, [], set()
    for path, data in records.items():
        folder = str(path.parent)
        if folder not in folders:
            folders.append(folder)
        new = json.loads(data)
        here_path = root / path
        here = load(here_path) if here_path.exists() else None
        if here is not None and ((here.get("status") == "complete" and new.get("status") != "complete")
                                 or len(new["history"]) < len(here["history"])):
            print(f"NOT FILED: {path} here is {summary(here)}; the one that came back ({summary(new)}) "
                  f"is behind it and stays in {back}", file=sys.stderr)
            refused, _ = 1, behind.add((folder, path.stem))
            continue
        _install(data, here_path)
        if new.get("status") == "complete":
            (here_path.parent / "checkpoints" / f"{path.stem}.pt").unlink(missing_ok=True)
        print(f"{path}: {summary(new)}")
    for entry in manifest:
        folder, name = entry["folder"], entry["name"]
        run = Path(name).stem.rsplit("-epoch", 1)[0] if entry["what"] == "kept" else Path(name).stem
        rec = load(root / folder / f"{run}.json")
        if (folder, run) in behind:
            continue  # the state of a record that was refused as behind: behind too
        if entry["what"] != "kept" and rec is not None and (
                rec.get("status") == "complete" or len(rec["history"]) > (entry.get("epochs") or 0)):
            continue  # a finished run's state, or one older than the record here: it would roll the run back
        _install((back / entry["file"]).read_bytes(), root / folder / "checkpoints" / name)
        print(f"{folder}/checkpoints/{name}")
        if folder not in folders:
            folders.append(folder)
    if logs_in:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        logs = next(root / ".gpu-logs" / f"{stamp}-{n}" for n in range(1, 1000)
                    if not (root / ".gpu-logs" / f"{stamp}-{n}").exists())
        for path, data in logs_in.items():
            _install(data, logs.joinpath(*path.parts[1:]))
        print(f"logs: {logs.relative_to(root)}/")
    if (back / "log.txt").is_file():
        print("".join(io.StringIO((back / "log.txt").read_text()).readlines()[-8:]), end="")
    print()
    carry = [".gpu"] + [str(p.relative_to(root)) for f in folders for p in sorted((root / f).glob("checkpoints/*.pt"))
                        if "-epoch" not in p.stem and (load(root / f / f"{p.stem}.json") or {}).get("status")
                        not in (None, "complete")]
    if folders:
        print("commit the records: git add " + " ".join(f"{f}/*.json" for f in folders))
    print("the unfinished runs resume from: " + json.dumps(carry))
    sizes = [sum(p.stat().st_size for p in (root / c).rglob("*") if p.is_file()) if (root / c).is_dir()
             else (root / c).stat().st_size if (root / c).exists() else 0 for c in carry]
    total = tree_bytes(root) + sum(sizes)
    print(f"(the tree and all of these: {total / MIB:.0f} MiB of the {SEND_LIMIT // MIB} MiB a call may send"
          + ("; too much: carry .gpu and fewer checkpoints, the others in a later call)" if total > SEND_LIMIT
             else ")") + ("; a call carries 8 paths at most" if len(carry) > 8 else ""))
    return refused


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
