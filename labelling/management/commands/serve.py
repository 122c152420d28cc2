"""`manage.py serve`: the web server and a background worker together; Ctrl-C stops both."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time

from django.conf import settings
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Run gunicorn and a Celery worker (with beat) as one unit, as `make run` does."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--bind", default="127.0.0.1:8000")
        parser.add_argument("--web-workers", type=int, default=2)
        parser.add_argument("--no-worker", action="store_true", help="Serve pages only.")

    def handle(self, *args, bind: str, web_workers: int, no_worker: bool, **options) -> None:
        python = sys.executable
        schedule = os.path.join(settings.VAR_DIR, "celerybeat-schedule")
        commands = {
            "web": [
                python, "-m", "gunicorn", "annotator.wsgi:application", "--bind", bind,
                "--workers", str(web_workers), "--threads", "4", "--access-logfile", "-",
                "--graceful-timeout", "5",
            ],
        }  # fmt: skip
        if not no_worker:
            commands["worker"] = [
                python, "-m", "celery", "-A", "annotator", "worker", "--beat",
                "--schedule", schedule, "--queues", "default,ml", "--concurrency", "2",
                "--loglevel", "INFO",
            ]  # fmt: skip
        # Own sessions, so Ctrl-C reaches only this process, which stops both in order
        # (a terminal would otherwise signal every worker child at once).
        processes = {
            name: subprocess.Popen(cmd, start_new_session=True)  # noqa: S603
            for name, cmd in commands.items()
        }
        self.stdout.write(self.style.SUCCESS(f"Serving on http://{bind}/ (Ctrl-C stops)"))

        stopping = False

        def stop(*_args) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        exit_code = 0
        try:
            while not stopping:
                for name, process in processes.items():
                    if process.poll() is not None:
                        self.stderr.write(f"The {name} process exited ({process.returncode}).")
                        exit_code = process.returncode or 1
                        stopping = True
                time.sleep(0.5)
        finally:
            for process in processes.values():
                if process.poll() is None:
                    process.send_signal(signal.SIGTERM)  # warm: finish the running requests/tasks
            deadline = time.monotonic() + 15
            for process in processes.values():
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=max(0.1, deadline - time.monotonic()))
            # Whatever is left of each session (a task stuck past the grace period, a pool child
            # orphaned by its parent) goes now. Tasks are acknowledged late, so an unfinished
            # one is delivered again at the next start.
            for process in processes.values():
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        if exit_code:
            sys.exit(exit_code)
