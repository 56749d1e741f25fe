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

import json
import re
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


def is_behind(new: dict, here: dict) -> bool:
    """Whether the record that came back is behind the one here: unfinished over complete, fewer
    epochs, or less wall time at as many epochs (an earlier call's state collected late)."""
    if here.get("status") == "complete" and new.get("status") != "complete":
        return True
    return (len(new["history"]), new.get("wall_time_s", 0)) < (len(here["history"]), here.get("wall_time_s", 0))


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
    records, raw, logs_in, manifest = {}, {}, {}, []

    def refuse(what: str) -> int:
        print(f"dev/gpu/collect.py: refusing {what}", file=sys.stderr)
        return 2
    with tarfile.open(back / "records.tgz") as tar:
        for m in tar.getmembers():
            path = Path(m.name)
            if m.isdir() and not path.is_absolute() and ".." not in path.parts:
                continue
            if not m.isfile() or path.is_absolute() or ".." in path.parts:
                return refuse(f"archive member {m.name!r}")
            data = tar.extractfile(m).read()
            if m.name == "manifest.json":
                try:
                    manifest = json.loads(data)
                except ValueError as e:
                    return refuse(f"manifest.json: {e}")
            elif path.parts[0] == "logs":
                logs_in[path] = data
            else:
                try:
                    folder_slug(str(path.parent))  # a folder under results/, or refused
                    record = json.loads(data)
                    if path.suffix != ".json" or not isinstance(record, dict) \
                            or not isinstance(record.get("history"), list):
                        raise ValueError("not a run record")
                except (SystemExit, ValueError) as e:
                    return refuse(f"archive member {m.name!r}: {e}")
                records[path], raw[path] = record, data
    if not isinstance(manifest, list):
        return refuse("manifest.json: not a list")
    for entry in manifest:
        try:
            folder_slug(entry["folder"])
            if not re.fullmatch(r"ckpt/[0-9]+\.pt", entry["file"]) or Path(entry["name"]).name != entry["name"] \
                    or not entry["name"].endswith(".pt") or not isinstance(entry["what"], str) \
                    or not isinstance(entry.get("epochs", 0), int):
                raise ValueError("malformed")
        except (SystemExit, KeyError, TypeError, ValueError) as e:
            return refuse(f"manifest entry {entry!r}: {e}")
    listed = {entry["file"] for entry in manifest}
    for extra in sorted(str(p.relative_to(back)) for p in back.glob("ckpt/*.pt")):
        if extra not in listed:
            print(f"WARNING: {extra} is not in the manifest (a send cut short?); not filed", file=sys.stderr)

    refused, folders, behind = 0, [], set()
    states = {}  # (folder, run) -> epochs of its state that came back, whole, in this call
    for entry in manifest:
        if not (back / entry["file"]).is_file():  # left out by the tool (over its limits)
            print(f"NOT FILED: {entry['folder']}/checkpoints/{entry['name']} did not come back ({entry['file']})",
                  file=sys.stderr)
            refused = 1
        elif entry["what"] != "kept":
            states[(entry["folder"], Path(entry["name"]).stem)] = entry.get("epochs") or 0
    for path, new in records.items():
        folder, run = str(path.parent), path.stem
        if folder not in folders:
            folders.append(folder)
        here_path = root / path
        if here_path.is_file() and here_path.read_bytes() == raw[path]:
            continue  # the same record as here (sent again): nothing to file
        here = load(here_path) if here_path.exists() else None
        if here is not None and is_behind(new, here):
            print(f"NOT FILED: {path} here is {summary(here)}; the one that came back ({summary(new)}) "
                  f"is behind it and stays in {back}", file=sys.stderr)
            refused = 1
            behind.add((folder, run))
            continue
        if new.get("status") != "complete" and states.get((folder, run), -1) < len(new["history"]):
            # its state did not come back with it: filed alone, the record would be ahead of the
            # checkpoint a resume starts from (and the run would go back)
            print(f"HELD BACK: {path} ({summary(new)}) came without its checkpoint; the next call brings both "
                  f"(it stays in {back})", file=sys.stderr)
            refused = 1
            behind.add((folder, run))
            continue
        _install(raw[path], here_path)
        if new.get("status") == "complete":
            (here_path.parent / "checkpoints" / f"{run}.pt").unlink(missing_ok=True)
        print(f"{path}: {summary(new)}")
    for entry in manifest:
        folder, name = entry["folder"], entry["name"]
        kept = entry["what"] == "kept"
        run = Path(name).stem.rsplit("-epoch", 1)[0] if kept else Path(name).stem
        if not (back / entry["file"]).is_file() or (not kept and (folder, run) in behind):
            continue  # missing, or the state of a record not filed: behind, or held back with it
        rec = load(root / folder / f"{run}.json")
        if not kept and rec is not None and (
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
        print("\n".join((back / "log.txt").read_text().splitlines()[-8:]))
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
