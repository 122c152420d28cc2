"""Where the CLI import spends its CPU: `manage.py import_items` under cProfile.

Run by hand (`.venv/bin/python bench/import/profile_cli.py`); never part of the test suite. It
sets up a throwaway database as run.py does (the same one: run them one after the other), then
runs `import_items --project SLUG FILE` twice, each in a process of its own: without a profiler,
then under cProfile. It prints the command's CPU seconds each time (CPU rather than wall time,
which other work on a shared machine skews; Django's start-up left out, the language model's
load and the commit counted, as in run.py) and the functions that took most of the time.

Options: --items N (default 20,000), --top N (functions listed), --root DIR (another checkout,
for before/after figures, as in run.py), --keep-db.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import run

# Runs in the benchmarked checkout. A profiler whose clock is the CPU time would read that clock
# (a system call) twice a function call, and count mostly itself: its clock stays the default,
# and the CPU time is the process's own, around the import.
CHILD = """
import cProfile, pstats, sys, time
import django
django.setup()
from django.core.management import call_command
slug, file, top = sys.argv[1], sys.argv[2], int(sys.argv[3])
profile = cProfile.Profile() if top else None
started = time.process_time()
if profile:
    profile.enable()
call_command("import_items", "--project", slug, file, "--no-progress")
if profile:
    profile.disable()
print(f"CPU seconds{' under cProfile' if profile else ''}: {time.process_time() - started:.2f}")
if profile:
    pstats.Stats(profile).sort_stats("tottime").print_stats(top)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--top", type=int, default=25, help="Functions listed, by own time.")
    parser.add_argument("--keep-db", action="store_true", help=f"Leave {run.DB_NAME} in place.")
    parser.add_argument("--root", type=Path, default=run.ROOT, help="The checkout to profile.")
    args = parser.parse_args()
    root = args.root.resolve()

    with tempfile.TemporaryDirectory(prefix="profile-import-") as tmp:
        work = Path(tmp)
        env = run.bench_env(work / "var")
        print(f"Creating {run.DB_NAME} and migrating ({root}) ...", flush=True)
        run.create_database()
        try:
            migrate = [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"]
            subprocess.run(migrate, cwd=root, env=env, check=True)
            run.create_fixtures(root, env, ["plain", "profile"])
            file = work / "conversations.jsonl"
            print(f"Generating {args.items:,} conversations ...", flush=True)
            run.generate(file, args.items)
            # Once without the profiler, for its CPU time alone; once with it, for where it goes.
            for slug, top in (("plain", 0), ("profile", args.top)):
                command = [sys.executable, "-c", CHILD, slug, str(file), str(top)]
                subprocess.run(command, cwd=root, env=env, check=True)
        finally:
            if args.keep_db:
                print(f"Kept the database: {run.SERVER_URL}/{run.DB_NAME}")
            else:
                run.drop_database()


if __name__ == "__main__":
    main()
