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
    $OUT/records.tgz            every record the session wrote or changed, as <RECORDS>/<name>.json,
                                and the sweeps' logs, as logs/...
    $OUT/ckpt/<folder>/<name>.pt  the checkpoints of the runs not complete, newest state (then kept
                                epochs), while they fit; <folder> is RECORDS with '/' as '__'
"""

from __future__ import annotations

import argparse
import io
import json
import os
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


def work() -> Path:
    return Path(os.environ.get("WORK") or "/var/tmp/akt-gpu")


def folder_slug(records: str) -> str:
    """``results/zsq/paper`` -> ``results__zsq__paper``: one folder level, in the names the tool allows."""
    parts = Path(records).parts
    if Path(records).is_absolute() or not parts or parts[0] != "results" or ".." in parts \
            or any("__" in p for p in parts):
        raise SystemExit(f"session: RECORDS must be a folder under results/ (relative, no '..', no '__'), "
                         f"got {records!r}")
    return "__".join(parts)


def say(*parts) -> None:
    print(time.strftime("%H:%M:%S"), *parts, flush=True)


def load_json(path: Path, default):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return default


def stamp(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


# ---------------------------------------------------------------------------------------------- start
def setup(records: str) -> Path:
    """The work folder of this machine, made on the first call; the records folder of ``records``."""
    w = work()
    commit = (ROOT / ".gpu" / "COMMIT").read_text().strip()
    if not (w / "COMMIT").is_file():
        w.mkdir(parents=True, exist_ok=True)
        shutil.copytree(ROOT / "akt_lib", w / "tree" / "akt_lib", ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copytree(ROOT / ".gpu" / "data", w / "data")
        (w / "COMMIT").write_text(commit + "\n")
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
    (w / "snapshot.json").write_text(json.dumps(snap))
    ckpts = [p.name for p in seeded if p.suffix == ".pt"]
    if seeded:
        say(f"{records}: {len(seeded) - len(ckpts)} records and {len(ckpts)} checkpoints from the tree"
            + "".join(f"\n    checkpoint {n}" for n in ckpts))
    return rec


def start_mps() -> dict:
    """Start NVIDIA MPS once per machine; the environment its clients need ({} without MPS)."""
    w = work()
    saved = w / "mps.json"
    if saved.is_file():
        return load_json(saved, {})
    env = {}
    control = shutil.which("nvidia-cuda-mps-control")
    if os.environ.get("MPS", "1") != "1":
        say("MPS: not asked for (MPS=0)")
    elif control is None:
        say("MPS: nvidia-cuda-mps-control is not on this machine; side-by-side runs take turns on the GPU")
    else:
        env = {"CUDA_MPS_PIPE_DIRECTORY": str(w / "mps-pipe"), "CUDA_MPS_LOG_DIRECTORY": str(w / "mps-log")}
        for d in env.values():
            Path(d).mkdir(parents=True, exist_ok=True)
        full = {**os.environ, **env}
        started = subprocess.run([control, "-d"], env=full, capture_output=True, text=True, timeout=60)
        probe = "import torch; x = torch.ones(1024, device='cuda'); print(float(x.sum()))"
        try:
            ok = started.returncode == 0 and subprocess.run(
                [sys.executable, "-c", probe], env=full, capture_output=True, text=True, timeout=120).returncode == 0
        except subprocess.TimeoutExpired:
            ok = False
        if ok:
            say(f"MPS: on (pipe {env['CUDA_MPS_PIPE_DIRECTORY']})")
        else:
            say(f"MPS: did not work (rc {started.returncode}: {started.stderr.strip()[-300:]}); going on without")
            subprocess.run([control], input="quit\n", env=full, capture_output=True, text=True, timeout=60)
            env = {}
    saved.write_text(json.dumps(env))
    return env


def sweeps() -> list[Path]:
    return sorted((work() / "sweeps").glob("[0-9]*"), key=lambda p: int(p.name))


def alive(sweep: Path) -> bool:
    return not (sweep / "rc").exists()


def jobs_of(argv: list[str]) -> int:
    return int(argv[argv.index("--jobs") + 1]) if "--jobs" in argv else 1


def cmd_start(args) -> int:
    records = os.environ.get("RECORDS") or f"results/zsq/{os.environ.get('PROFILE', 'paper')}"
    rec = setup(records)
    mps = start_mps()
    w = work()
    budget = os.environ.get("BUDGET", "1380")
    # Always through the runner (--jobs, 1 if not given): it stops its runs cleanly on SIGTERM at any
    # moment (`stop`), one log per run.
    jobs = [] if "--jobs" in args.zsq_args else ["--jobs", "1"]
    argv = ["zsq", "run", *args.zsq_args, *jobs, "--profile", os.environ.get("PROFILE", "paper"), "--out", str(rec),
            "--device", os.environ.get("DEVICE", "cuda"), "--time-budget", budget, "--no-progress"]
    running = [s for s in sweeps() if alive(s)]
    # Every run of every sweep records how many share the device: this sweep's and those running.
    total = sum(jobs_of(load_json(s / "argv.json", [])) for s in running) + jobs_of(argv)
    sweep = w / "sweeps" / str(len(sweeps()) + 1)
    sweep.mkdir(parents=True)
    (sweep / "argv.json").write_text(json.dumps(argv))
    (sweep / "records").write_text(records + "\n")
    env = {**os.environ, **mps, "AKT_DATA_DIR": str(w / "data"), "PYTHONPATH": str(w / "tree"),
           "AKT_SIDE_BY_SIDE": str(total), "PYTHONUNBUFFERED": "1"}
    # sh waits for the sweep and writes its exit code; the sweep's own pid is what `stop` signals.
    script = 'python3 -m akt_lib "$@" & echo $! > "$0/pid"; wait $!; echo $? > "$0/rc"'
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
    if len(running) and int(sweep.name) > 1:
        say("note: runs started later stop later: BUDGET counts from each sweep's start")
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
        # 143: SIGTERM (`stop`) reached the runner before it had started any run: nothing was lost
        state = {None: "running", "143": "stopped before any of its runs started"}.get(rc, f"exit {rc}")
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
        if alive(s) and (s / "pid").exists():
            try:
                os.kill(int((s / "pid").read_text()), signal.SIGTERM)  # the runner stops its runs cleanly
                say(f"sweep {s.name}: asked to stop (its runs write their checkpoints)")
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + args.seconds
    while any(alive(s) for s in chosen) and time.monotonic() < deadline:
        time.sleep(1)
    if any(alive(s) for s in chosen):
        say(f"still running after {args.seconds:.0f} s; sending what is there")
    return cmd_wait(argparse.Namespace(seconds=0, every=60))


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
    out = Path(os.environ.get("OUT") or "")
    if not os.environ.get("OUT") or not out.is_dir():
        raise SystemExit("session: OUT is not set to a folder: this runs on the device machine")
    snap = load_json(work() / "snapshot.json", {})
    changed = lambda p: snap.get(str(p)) != stamp(p)  # noqa: E731
    records, ckpts = [], []
    sent = load_json(work() / "sent.json", {})  # the kept epochs' states that went back already
    for s in sweeps():
        folder = (s / "records").read_text().strip()
        rec_dir = work() / "records" / folder_slug(folder)
        if (folder, rec_dir) not in records:
            records.append((folder, rec_dir))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        def add(path: Path, arcname: str) -> bytes:
            # Read once, then archive those bytes: a run may replace the file meanwhile (atomically),
            # and tar.add would pair the old size with the new content.
            data = path.read_bytes()
            info = tarfile.TarInfo(arcname)
            info.size, info.mtime, info.mode = len(data), int(path.stat().st_mtime), 0o644
            tar.addfile(info, io.BytesIO(data))
            return data

        for folder, rec_dir in records:
            for p in sorted(rec_dir.glob("*.json")):
                if not changed(p):
                    continue
                try:
                    status = json.loads(add(p, f"{folder}/{p.name}")).get("status")
                except ValueError:
                    status = None
                own = rec_dir / "checkpoints" / f"{p.stem}.pt"
                if status != "complete" and own.is_file() and changed(own):
                    ckpts.append((folder, own, status))
                ckpts += [(folder, k, "kept") for k in sorted(rec_dir.glob(f"checkpoints/{p.stem}-epoch*.pt"))
                          if changed(k) and sent.get(str(k)) != stamp(k)]  # kept states: once
            for log in sorted(rec_dir.glob("logs/*.log")):
                add(log, f"logs/{folder_slug(folder)}/{log.name}")
        for s in sweeps():
            add(s / "log.txt", f"logs/sweep-{s.name}.txt")
    (out / "records.tgz").write_bytes(buf.getvalue())
    ckpts.sort(key=lambda c: c[2] == "kept")  # the states to resume from first, kept epochs after
    files, size = 2, len(buf.getvalue()) + MIB  # records.tgz and the command's log.txt
    for folder, p, what in ckpts:
        n = p.stat().st_size
        if files + 1 > BACK_FILES or size + n > BACK_ALL or n > BACK_FILE:
            print(f"LEFT ON THE DEVICE (over what one call brings back): {p.name}", file=sys.stderr)
            continue
        dest = out / "ckpt" / folder_slug(folder)
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copy2(p, dest / p.name)  # written atomically by the run: this is one whole state
        files, size = files + 1, size + n
        if what == "kept":
            sent[str(p)] = stamp(p)
        print(f"back: {folder}/checkpoints/{p.name} ({what}, {n / MIB:.1f} MiB)", flush=True)
    (work() / "sent.json").write_text(json.dumps(sent))
    print(f"back: records.tgz ({len(buf.getvalue()) / 1024:.0f} KiB)", flush=True)
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
