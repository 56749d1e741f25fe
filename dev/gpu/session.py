"""On the device machine: zero-shot runs in the background of a warm machine, for a whole session.

A `device` command may run 10 minutes, but a machine stays with the session while calls follow each
other within its idle release (30 s), up to 30 minutes, and a process started in a new session
(setsid) runs on between calls. So the runs are started once, in the background, and later calls
only report and bring back what they have written: no run stops at a command's end, nothing is
carried between the calls of one session, and the CUDA graphs are captured once per run.

    bash dev/gpu/session.sh start adadfq-bs200-rfd0 --bits w4a4 --seeds 0 1 2 --jobs 3
    bash dev/gpu/session.sh start adadfq+akt --bits w4a4 --seeds 1 2 --jobs 2    # another sweep beside it
    bash dev/gpu/session.sh wait 540     # progress every minute; back under $OUT: records and checkpoints
    bash dev/gpu/session.sh wait 570     # the next call, at once: the same, later
    bash dev/gpu/session.sh stop [2]     # or let BUDGET stop the runs: each writes its checkpoint
    bash dev/gpu/session.sh run python3 -m akt_lib bench ...   # in the foreground, same environment

Every subcommand runs in the repository root that the call brought. What the runs use lives
outside it, in $WORK (default /var/tmp/akt-gpu), so that the tree each later call brings cannot
touch a running sweep: a copy of akt_lib/ (the commit .gpu/COMMIT names, checked by env.sh), of
the data, and one records folder per RECORDS (the folder here: results/zsq/paper by default),
seeded from this tree's records and carried checkpoints, so finished runs are not trained again and
stopped ones resume.

Environment: BUDGET (seconds of training before every run of a sweep stops and writes its
checkpoint; default 1380: a session's 30 minutes less the machine's start and the last call),
PROFILE (paper), RECORDS (results/zsq/$PROFILE), DEVICE (cuda), MPS (1: start NVIDIA's
multi-process service first, if the machine has it, so the kernels of side-by-side runs overlap
instead of taking turns; 0: not), WORK.

Back under $OUT, each call (dev/gpu/collect.py files it here), at most 8 files, 64 MiB:
    $OUT/records.tgz   every record the session wrote or changed, as <RECORDS>/<name>.json, the
                       sweeps' logs (logs/...), and manifest.json, which names each checkpoint
    $OUT/ckpt/<n>.pt   checkpoints of unfinished runs and kept epochs, while they fit (cmd_send says
                       which first); a run's own name has a '+', which the tool does not bring back
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MIB = 2 ** 20
# What one call brings back (the device tool's limits), with room for the command's own log.
BACK_FILES, BACK_FILE, BACK_ALL = 8, 16 * MIB, 63 * MIB
SAFE = re.compile(r"[A-Za-z0-9._-]+")  # the only file names the tool brings back ('+' is not one of them)


def work() -> Path:
    return Path(os.environ.get("WORK") or "/var/tmp/akt-gpu")


def folder_slug(records: str) -> str:
    """``results/zsq/paper`` -> ``results__zsq__paper``: one folder level, in the names the tool allows."""
    parts = Path(records).parts
    if Path(records).is_absolute() or not parts or parts[0] != "results" or ".." in parts \
            or any("__" in p or not SAFE.fullmatch(p) for p in parts):
        raise SystemExit(f"session: RECORDS must be a folder under results/ (relative, no '..', no '__', only "
                         f"letters, digits, '.', '_', '-'), got {records!r}")
    return "__".join(parts)


def say(*parts) -> None:
    print(time.strftime("%H:%M:%S"), *parts, flush=True)


def load_json(path: Path, default):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return default


def write_json(path: Path, obj) -> None:
    """Whole or not at all: a temporary file, then a rename."""
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(json.dumps(obj))
    tmp.replace(path)


def stamp(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


# ---------------------------------------------------------------------------------------------- start
def setup(records: str) -> Path:
    """The work folder of this machine, made on the first call; the records folder of ``records``."""
    w = work()
    commit = (ROOT / ".gpu" / "COMMIT").read_text().strip()
    if not (w / "COMMIT").is_file():  # built aside and renamed: a failed first call leaves no half folder
        if w.exists() and any(w.iterdir()):
            raise SystemExit(f"session: WORK={w} exists and is not a session's work folder; name a new one")
        part = w.with_name(w.name + ".part")
        shutil.rmtree(part, ignore_errors=True)  # ours: a first call that failed
        shutil.copytree(ROOT / "akt_lib", part / "tree" / "akt_lib", ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copytree(ROOT / ".gpu" / "data", part / "data")
        (part / "COMMIT").write_text(commit + "\n")
        if w.exists():
            w.rmdir()  # empty (checked above)
        part.rename(w)
        say(f"work folder {w}: akt_lib and data of commit {commit[:8]}")
    elif (w / "COMMIT").read_text().strip() != commit:
        raise SystemExit(f"session: {w} holds the sweeps of commit {(w / 'COMMIT').read_text().strip()[:8]}, "
                         f"this tree is {commit[:8]}: one commit per machine (stop, collect, call on a new one)")
    rec = w / "records" / folder_slug(records)
    (rec / "checkpoints").mkdir(parents=True, exist_ok=True)
    # What this tree has and the machine lacks: the records (finished runs are not trained again)
    # and the carried checkpoints (stopped runs resume). The machine's own files are newer: kept.
    src, snap, seeded = ROOT / records, load_json(w / "snapshot.json", {}), []
    for p in [*sorted(src.glob("*.json")), *sorted(src.glob("checkpoints/*.pt"))]:
        dest = rec / p.relative_to(src)
        if not dest.exists():
            shutil.copy2(p, dest)
            snap[str(dest)] = stamp(dest)  # what the session found: only what changes from here goes back
            seeded.append(dest)
    write_json(w / "snapshot.json", snap)
    for p in seeded:
        r = load_json(p, {}) if p.suffix == ".json" else {}
        if r.get("status") not in (None, "complete") and r.get("history") \
                and not (rec / "checkpoints" / f"{p.stem}.pt").is_file():
            say(f"WARNING: {records}/{p.name} has {len(r['history'])} epochs but its checkpoint was not carried: "
                "a start of that run trains it again from epoch 0 (carry checkpoints/" + p.stem + ".pt)")
    ckpts = [p.name for p in seeded if p.suffix == ".pt"]
    if seeded:
        say(f"{records}: {len(seeded) - len(ckpts)} records and {len(ckpts)} checkpoints from the tree"
            + "".join(f"\n    checkpoint {n}" for n in ckpts))
    return rec


def start_mps() -> dict:
    """The environment of this command's CUDA processes: MPS's ({} without), the daemon started once.

    MPS=0 gives {} for this command (its processes look in the default pipe directory, where no
    daemon listens, and take turns on the GPU) even while the daemon serves the sweeps. MPS is on
    only when, after a CUDA probe, the daemon reports a server: a client that fails to connect runs
    without MPS and says nothing.
    """
    w = work()
    control = shutil.which("nvidia-cuda-mps-control")
    env = {"CUDA_MPS_PIPE_DIRECTORY": str(w / "mps-pipe"), "CUDA_MPS_LOG_DIRECTORY": str(w / "mps-log")}
    full = {**os.environ, **env}
    if os.environ.get("MPS", "1") != "1":
        say("MPS: not for this command (MPS=0): its CUDA processes take turns on the GPU")
        return {}
    if control is None:
        say("MPS: nvidia-cuda-mps-control is not on this machine; side-by-side runs take turns on the GPU")
        return {}
    if (w / "mps-failed").exists():
        say(f"MPS: off (it did not work on this machine: {(w / 'mps-failed').read_text().strip()[:200]})")
        return {}
    from akt_lib.utils import mps_servers
    if mps_servers(full):
        return env
    for d in env.values():
        Path(d).mkdir(parents=True, exist_ok=True)
    try:  # -d forks the daemon; its output goes to files, so no inherited pipe keeps this call waiting
        with open(w / "mps-start.txt", "w") as log:
            started = subprocess.run([control, "-d"], env=full, stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, timeout=60).returncode
        probe = "import torch; x = torch.ones(1024, device='cuda'); print(float(x.sum()))"
        probed = subprocess.run([sys.executable, "-c", probe], env=full, capture_output=True, text=True,
                                timeout=180)
    except subprocess.TimeoutExpired as e:
        started, probed = None, e
    servers = mps_servers(full) if started == 0 else []
    if servers:
        say(f"MPS: on (server {', '.join(servers)}, pipe {env['CUDA_MPS_PIPE_DIRECTORY']}). A fatal GPU error in "
            "one run ends every run under it")
        return env
    if started is None:
        why = f"timed out: {probed}"
    elif started != 0:
        why = f"-d exited {started}"
    elif probed.returncode == 0:
        why = "the CUDA probe ran, but the daemon reports no server: it ran without MPS"
    else:
        why = f"the CUDA probe failed: {probed.stderr.strip()[-300:]}"
    say(f"MPS: did not work ({why}; {(w / 'mps-start.txt').read_text()[-200:].strip()}); going on without")
    if started == 0:  # the daemon this call started: stopped again (never one that was there before)
        try:
            subprocess.run([control], input="quit\n", env=full, capture_output=True, text=True, timeout=60)
        except subprocess.TimeoutExpired:
            say("MPS: the daemon did not answer 'quit'")
    (w / "mps-failed").write_text(why + "\n")
    return {}


def sweeps() -> list[Path]:
    return sorted((work() / "sweeps").glob("[0-9]*"), key=lambda p: int(p.name))


def alive(sweep: Path) -> bool:
    return not (sweep / "rc").exists()


def parse_run(zsq_args: list[str]) -> argparse.Namespace:
    """A ``zsq run`` command line read by the library's own parser (its abbreviations and ``--x=y``
    forms included); a line it refuses ends here, before anything starts."""
    from akt_lib.experiments import EXPERIMENTS, build_parser
    args = build_parser()[0].parse_args(["run", *zsq_args])
    unknown = [n for n in args.names if n not in EXPERIMENTS]
    if unknown:
        raise SystemExit(f"session: unknown row(s) {', '.join(unknown)}")
    return args


def runs_of(zsq_args: list[str]) -> set[tuple[str, str, str]]:
    """The (row, bits, seed) runs a ``zsq run`` command line names (a row without --bits: all of its).

    >>> sorted(runs_of(["adadfq+akt", "--bits=w4a4", "--seed", "1", "2", "--jobs", "2"]))
    [('adadfq+akt', 'w4a4', '1'), ('adadfq+akt', 'w4a4', '2')]
    """
    return _runs(parse_run(zsq_args))


def _runs(args: argparse.Namespace) -> set[tuple[str, str, str]]:
    from akt_lib.experiments import EXPERIMENTS
    return {(n, b, str(seed)) for n in args.names for b in (args.bits or EXPERIMENTS[n].bits) for seed in args.seeds}


def clashes(mine: set, theirs: set) -> list[tuple[str, str, str]]:
    """The runs of ``mine`` that ``theirs`` trains too.

    >>> clashes({("akt", "w4a4", "1"), ("akt", "w4a4", "2")}, {("akt", "w4a4", "2"), ("akt", "w3a3", "1")})
    [('akt', 'w4a4', '2')]
    """
    return sorted(mine & theirs)


def side_by_side(zsq_args: list[str]) -> int:
    """How many of a command line's runs train at once: its --jobs, at most its runs."""
    args = parse_run(zsq_args)
    return min(args.jobs, max(1, len(_runs(args))))


def cmd_start(args) -> int:
    records = os.environ.get("RECORDS") or f"results/zsq/{os.environ.get('PROFILE', 'paper')}"
    if not args.zsq_args or args.zsq_args[0].startswith("-"):
        raise SystemExit("session: start needs the arguments of `zsq run`, rows first")
    mine = runs_of(args.zsq_args)  # a line the runner would refuse stops here, before anything is set up
    rec = setup(records)
    mps = start_mps()
    w = work()
    budget = os.environ.get("BUDGET", "1380")
    argv = ["zsq", "run", *args.zsq_args, "--profile", os.environ.get("PROFILE", "paper"), "--out", str(rec),
            "--device", os.environ.get("DEVICE", "cuda"), "--time-budget", budget, "--no-progress"]
    running = [s for s in sweeps() if alive(s)]
    # Two sweeps on one run would write one checkpoint from two processes (a start sent twice).
    for s in running:
        if (s / "records").read_text().strip() != records:
            continue
        clash = clashes(mine, runs_of(load_json(s / "argv.json", [])[2:]))
        if clash:
            raise SystemExit(f"session: sweep {s.name} is already running {', '.join('-'.join(r) for r in clash)}")
    # Every run records how many share the device (its wall time is a shared time): SIDE_BY_SIDE when
    # the caller knows the session's plan (several starts in one call), else this sweep's and those running.
    total = int(os.environ.get("SIDE_BY_SIDE") or 0) or \
        sum(side_by_side(load_json(s / "argv.json", [])[2:]) for s in running) + side_by_side(args.zsq_args)
    sweep = w / "sweeps" / str(len(sweeps()) + 1)
    sweep.mkdir(parents=True)
    (sweep / "argv.json").write_text(json.dumps(argv))
    (sweep / "records").write_text(records + "\n")
    env = {**os.environ, **mps, "AKT_DATA_DIR": str(w / "data"), "PYTHONPATH": str(w / "tree"),
           "AKT_SIDE_BY_SIDE": str(total), "PYTHONUNBUFFERED": "1"}
    # sh waits for the sweep and writes its exit code (each file whole: written aside, then renamed);
    # the sweep's own pid is what `stop` signals. A sweep with one job per run stops as a whole on
    # SIGTERM: the run training stops, and no further run starts (runner.CommandBudget).
    script = ('python3 -m akt_lib "$@" & echo $! > "$0/pid.tmp"; mv "$0/pid.tmp" "$0/pid"; wait $!; '
              'echo $? > "$0/rc.tmp"; mv "$0/rc.tmp" "$0/rc"')
    with open(sweep / "log.txt", "w") as log:
        subprocess.Popen(["sh", "-c", script, str(sweep), *argv], cwd=w / "tree", env=env, stdout=log,
                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    say(f"sweep {sweep.name} started ({total} runs side by side now, budget {budget} s): python -m akt_lib "
        + " ".join(argv))
    for _ in range(150):  # a command line the runner refuses ends within seconds: say so now, not later
        if (sweep / "rc").exists():
            rc = (sweep / "rc").read_text().strip()
            say(f"sweep {sweep.name} has already ended (exit {rc}):\n" + (sweep / "log.txt").read_text()[-3000:])
            return 0 if rc == "0" else 1
        time.sleep(0.1)
    if running:
        say("note: BUDGET counts from each sweep's start (plus each run's setup): runs started later stop later")
    return 0


# ----------------------------------------------------------------------------------------------- wait
def progress_lines() -> list[str]:
    """One line per run whose record changed this session: state, epochs, accuracy, time per epoch."""
    snap = load_json(work() / "snapshot.json", {})
    lines = []
    for rec_dir in sorted((work() / "records").glob("*")):
        for p in sorted(rec_dir.glob("*.json")):
            if snap.get(str(p)) == stamp(p):
                continue
            r = load_json(p, None)
            if not isinstance(r, dict) or "history" not in r:
                continue
            h, epochs = r["history"], r.get("config", {}).get("epochs")
            line = f"  {p.stem}: {r.get('status')}, {len(h)}/{epochs} epochs"
            if h:
                best = max(e["acc"] for e in h)
                line += f", acc {h[-1]['acc']:.2f} (best {best:.2f})"
                timed = [e["train_s"] + e["eval_s"] for e in h[-10:] if "train_s" in e]
                if timed and r.get("status") == "running" and epochs:
                    per = sum(timed) / len(timed)
                    line += f", {per:.1f} s/epoch, ~{per * (epochs - len(h)) / 60:.0f} min to go"
            lines.append(line)
    return lines


def sweep_lines() -> list[str]:
    out = []
    for s in sweeps():
        argv = load_json(s / "argv.json", [])
        rc = None if alive(s) else (s / "rc").read_text().strip()
        # 143: SIGTERM (`stop`) came while no training loop (which stops cleanly) was running
        state = {None: "running", "143": "ended by SIGTERM during a run's setup: the runs before it are in "
                 "their records, the others had not begun training"}.get(rc, f"exit {rc}")
        out.append(f"  sweep {s.name} ({state}): " + " ".join(argv[2:argv.index('--profile')] if argv else []))
        if rc not in (None, "0", "3", "143"):
            out += ["    " + line for line in (s / "log.txt").read_text(errors="replace").splitlines()[-15:]]
    return out


def cmd_wait(args) -> int:
    deadline = time.monotonic() + args.seconds
    while True:
        running = [s for s in sweeps() if alive(s)]
        done = not running or time.monotonic() >= deadline
        lines = progress_lines()
        complete = [line for line in lines if ": complete," in line]
        say(f"{len(running)} of {len(sweeps())} sweeps running; {len(complete)} runs complete this session")
        print("\n".join(lines if done else [line for line in lines if line not in complete]), flush=True)
        if done:
            break
        next_report = min(deadline, time.monotonic() + args.every)
        while time.monotonic() < next_report and any(alive(s) for s in running):
            time.sleep(max(0.0, min(1.0, next_report - time.monotonic())))
    print("\n".join(sweep_lines()), flush=True)
    return cmd_send(args)


def cmd_stop(args) -> int:
    chosen = [s for s in sweeps() if not args.sweeps or int(s.name) in args.sweeps]
    unknown = set(args.sweeps) - {int(s.name) for s in sweeps()}
    if unknown:
        raise SystemExit(f"session: no sweep {', '.join(map(str, sorted(unknown)))} on this machine")
    for s in chosen:
        if alive(s) and (s / "stop-asked").exists():
            say(f"sweep {s.name}: asked to stop already (a second SIGTERM would kill its runs); waiting")
        elif alive(s) and (s / "pid").exists():
            try:
                os.kill(int((s / "pid").read_text()), signal.SIGTERM)  # the runner stops its runs cleanly
                (s / "stop-asked").touch()
                say(f"sweep {s.name}: asked to stop (its runs write their checkpoints)")
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + args.seconds
    while any(alive(s) for s in chosen) and time.monotonic() < deadline:
        time.sleep(1)
    left = [s.name for s in chosen if alive(s)]
    if left:
        say(f"sweep {', '.join(left)} still running after {args.seconds:.0f} s; sending what is there")
    code = cmd_wait(argparse.Namespace(seconds=0, every=60))
    return 1 if left else code


def cmd_run(args) -> int:
    """A command in the foreground with the sweeps' environment (MPS, the copied library and data),
    e.g. a benchmark before the sweeps start."""
    setup(os.environ.get("RECORDS") or f"results/zsq/{os.environ.get('PROFILE', 'paper')}")
    w = work()
    env = {**os.environ, **start_mps(), "AKT_DATA_DIR": str(w / "data"), "PYTHONPATH": str(w / "tree")}
    if not args.command:
        raise SystemExit("session: run needs a command")
    return subprocess.run(args.command, cwd=w / "tree", env=env).returncode


# ----------------------------------------------------------------------------------------------- send
def cmd_send(args) -> int:
    """Under $OUT: records.tgz (the records changed this session, the logs, and manifest.json) and
    ckpt/<n>.pt, checkpoints under names the tool brings back ('+' in a run's name is not one of
    them); manifest.json says which run and folder each is, and at how many epochs of its record.

    Which checkpoints, while they fit (8 files, 63 MiB): one kept epoch never sent; the states of
    unfinished runs that changed since they last went back, the longest unsent first (so every run's
    state comes back in turn when more runs train than one call can bring); the other kept epochs
    never sent; then, with room left, what went back already (in case a call's files were lost).
    """
    out = Path(os.environ.get("OUT") or "")
    if not os.environ.get("OUT") or not out.is_dir():
        raise SystemExit("session: OUT is not set to a folder: this runs on the device machine")
    snap = load_json(work() / "snapshot.json", {})
    changed = lambda p: snap.get(str(p)) != stamp(p)  # noqa: E731
    sent = load_json(work() / "sent.json", {})  # path -> [stamp, time] of what went back
    folders = list(dict.fromkeys((s / "records").read_text().strip() for s in sweeps()))
    members, candidates = {}, []  # arcname -> bytes; (tier, last sent, folder, path, what, epochs)
    for folder in folders:
        rec_dir = work() / "records" / folder_slug(folder)
        for p in sorted(rec_dir.glob("*.json")):
            if not changed(p):
                continue
            # Read once, then archive those bytes: a run replaces the file (atomically) meanwhile.
            members[f"{folder}/{p.name}"] = data = p.read_bytes()
            try:
                record = json.loads(data)
            except ValueError:
                record = {}
            epochs = len(record.get("history", []))
            states = [(rec_dir / "checkpoints" / f"{p.stem}.pt", record.get("status"))] \
                if record.get("status") != "complete" else []
            states += [(k, "kept") for k in sorted(rec_dir.glob(f"checkpoints/{p.stem}-epoch*.pt"))]
            for path, what in states:
                if not path.is_file() or not changed(path):
                    continue
                last = sent.get(str(path))
                fresh = last is None or last[0] != stamp(path)
                tier = (0 if what != "kept" else 1) if fresh else (2 if what != "kept" else 3)
                candidates.append((tier, last[1] if last else 0.0, folder, path, what, epochs))
        for log in sorted(rec_dir.glob("logs/*.log")):
            members[f"logs/{folder_slug(folder)}/{log.name}"] = log.read_bytes()
    for s in sweeps():
        members[f"logs/sweep-{s.name}.txt"] = (s / "log.txt").read_bytes()

    def archive(manifest: list, with_logs: bool = True) -> bytes:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            items = [(k, v) for k, v in members.items() if with_logs or not k.startswith("logs/")]
            for name, data in items + [("manifest.json", json.dumps(manifest, indent=1).encode())]:
                info = tarfile.TarInfo(name)
                info.size, info.mtime, info.mode = len(data), int(time.time()), 0o644
                tar.addfile(info, io.BytesIO(data))
        return buf.getvalue()

    shutil.rmtree(out / "ckpt", ignore_errors=True)  # an earlier send of this same command: replaced
    # What else this call puts under $OUT (a benchmark's record, say) counts against the limits too.
    others = [p for p in out.rglob("*") if p.is_file() and p.name != "records.tgz" and "ckpt" not in p.parts]
    files = len(others) + 1 + (0 if (out / "log.txt").exists() else 1)  # + records.tgz (+ log.txt to come)
    size = sum(p.stat().st_size for p in others) + len(archive([])) + MIB // 16 + MIB  # + manifest, log growth
    manifest = []
    candidates.sort(key=lambda c: (c[0], c[1]))
    first_kept = next((i for i, c in enumerate(candidates) if c[0] == 1), None)
    running = any(alive(s) for s in sweeps())
    if first_kept is not None and running:  # a slot for a kept epoch never sent, or the states would starve it
        candidates.insert(0, candidates.pop(first_kept))  # (once nothing runs, the states to resume come first)
    left_behind = []
    for tier, _, folder, path, what, epochs in candidates:
        n = path.stat().st_size
        if files + 1 > BACK_FILES or size + n > BACK_ALL or n > BACK_FILE:
            if tier < 2:
                left_behind.append(f"{folder}/checkpoints/{path.name}")
            continue
        name = f"ckpt/{len(manifest) + 1}.pt"
        (out / "ckpt").mkdir(exist_ok=True)
        before = stamp(path)  # taken first: a state replaced during the copy reads as changed next time
        shutil.copy2(path, out / name)  # the run writes it atomically: this is one whole state
        manifest.append({"file": name, "folder": folder, "name": path.name, "what": what, "epochs": epochs})
        sent[str(path)] = [before, time.time()]
        files, size = files + 1, size + n
        print(f"back: {folder}/checkpoints/{path.name} ({what}{', again' if tier >= 2 else ''}, "
              f"{n / MIB:.1f} MiB)", flush=True)
    for name in left_behind:
        print(f"LEFT ON THE DEVICE this call (over what one call brings back): {name}"
              + ("" if running else "; nothing runs: call `bash dev/gpu/session.sh send` again at once"),
              file=sys.stderr)
    data = archive(manifest)
    if len(data) > BACK_FILE:  # the logs are what grows; the records and the manifest must come back
        print("records.tgz: over 16 MiB with the logs; sent without them", file=sys.stderr)
        data = archive(manifest, with_logs=False)
    (out / "records.tgz.part").write_bytes(data)
    (out / "records.tgz.part").rename(out / "records.tgz")  # a call killed meanwhile leaves no half archive
    write_json(work() / "sent.json", sent)
    print(f"back: records.tgz ({len(data) / 1024:.0f} KiB, {sum(1 for k in members if not k.startswith('logs/'))} "
          "records)", flush=True)
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="bash dev/gpu/session.sh", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="subcommand", required=True)
    s = sub.add_parser("start", help="start one sweep in the background: the arguments of `zsq run`")
    s.add_argument("zsq_args", nargs=argparse.REMAINDER)
    s = sub.add_parser("wait", help="report until the sweeps end or SECONDS pass, then send")
    s.add_argument("seconds", type=float)
    s.add_argument("--every", type=float, default=60.0, help="seconds between reports")
    s = sub.add_parser("stop", help="stop the sweeps named (default: all; checkpoints written), then send")
    s.add_argument("sweeps", nargs="*", type=int, help="sweep numbers, as `start` and `wait` print them")
    s.add_argument("--seconds", type=float, default=240.0, help="how long to wait for them")
    s = sub.add_parser("run", help="run a command with the sweeps' environment (MPS, library, data)")
    s.add_argument("command", nargs=argparse.REMAINDER)
    sub.add_parser("send", help="records and checkpoints under $OUT")
    args = p.parse_args(argv)
    return {"start": cmd_start, "wait": cmd_wait, "stop": cmd_stop, "send": cmd_send,
            "run": cmd_run}[args.subcommand](args)


if __name__ == "__main__":
    sys.exit(main())
