"""Import benchmark: conversations into PostgreSQL through the CLI and the REST API.

Run by hand (`make bench-import` or `.venv/bin/python bench/import/run.py`); it prints a table and
is never part of the test suite. It creates a throwaway database on the local PostgreSQL server
(127.0.0.1:5432, user postgres), migrates it, generates seeded synthetic conversations (the same
file every run), imports each file into an empty project both ways, and drops the database:

- cli: `manage.py import_items --project SLUG - --no-progress` in a subprocess, fed the file
  through a pipe; timed from its first read of the input to its exit, so Django's start-up is
  left out; peak RSS is the child's ru_maxrss (from wait4);
- api: one gunicorn worker, warmed up by a one-item import; the file is streamed from disk as the
  body of `POST /api/v1/projects/SLUG/items/` (application/x-ndjson, `Authorization: Token ...`);
  timed over the request; peak RSS is the worker's VmHWM (a fresh server per import).

Two sizes (20,000 and 100,000 items by default) show whether memory stays flat in file size.
Options: --items N [N ...], --repeat N (median of N runs), --paths cli api, --keep-db, and
--root DIR to benchmark another checkout (e.g. an older commit, for before/after figures).
Where the CPU time goes: bench/import/profile_cli.py.
"""

from __future__ import annotations

import argparse
import fcntl
import http.client
import json
import os
import random
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

ROOT = Path(__file__).resolve().parents[2]
SERVER_URL = "postgres://postgres@127.0.0.1:5432"
DB_NAME = "annotator_bench_import"
SIZES = (20_000, 100_000)
SEED = 20240611
GOAL_ITEMS_PER_S = 15_000

# A few hundred everyday words per language, enough for text that reads like each language to
# py3langid, so detection does its normal amount of work.
WORDS = {
    "en": """the of and to in is you that it he was for on are as with his they at be this have
        from or one had by word but not what all were we when your can said there use an each which
        she do how their if will up other about out many then them these so some her would make
        like him into time has look two more write go see number no way could people my than first
        water been call who oil its now find long down day did get come made may part over new
        sound take only little work know place year live me back give most very after thing our
        just name good sentence man think say great where help through much before line right too
        mean old any same tell boy follow came want show also around form three small set put end
        does another well large must big even such because turn here why ask went men read need
        land different home us move try kind hand picture again change off play spell air away
        animal house point page letter mother answer found study still learn should world model
        please explain summary question answer report customer invoice order refund delivery""",
    "pt": """o de a que e do da em um para com não uma os no se na por mais as dos como mas ao ele
        das à seu sua ou quando muito nos já eu também só pelo pela até isso ela entre depois sem
        mesmo aos seus quem nas me esse eles você essa num nem suas meu às minha numa pelos elas
        qual nós lhe deles essas esses pelas este dele tu te vocês vos lhes meus minhas teu tua
        teus tuas nosso nossa nossos nossas dela delas esta estes estas aquele aquela aqueles
        aquelas isto aquilo estou está estamos estão estive esteve estivemos estiveram estava
        estávamos estavam hoje amanhã obrigado bom dia pedido entrega reembolso cliente pergunta
        resposta resumo explicar relatório nota fiscal casa trabalho cidade pessoas tempo coisa""",
    "es": """el la de que y a en un ser se no haber por con su para como estar tener le lo todo
        pero más hacer o poder decir este ir otro ese si me ya ver porque dar cuando él muy sin
        vez mucho saber qué sobre mi alguno mismo yo también hasta año dos querer entre así
        primero desde grande eso ni nos llegar pasar tiempo ella sí día uno bien poco deber
        entonces poner cosa tanto hombre parecer nuestro tan donde ahora parte después vida
        quedar siempre creer hablar llevar dejar nada cada seguir menos nuevo encontrar algo
        solo pedido entrega reembolso cliente pregunta respuesta resumen explicar informe factura
        gracias buenos días trabajo ciudad gente mañana hoy ayer semana mes""",
}
MODELS = ("gpt-4o-mini", "llama-3.1-8b", "mistral-small", "qwen2.5-7b", "claude-haiku")


# Data ------------------------------------------------------------------------------------------


def _sentence_pool(rng: random.Random, words: list[str], count: int) -> list[str]:
    """Pre-built sentences: assembling messages from these is far faster than word by word."""
    pool = []
    for _ in range(count):
        picked = rng.choices(words, k=rng.randint(5, 16))
        text = " ".join(picked)
        pool.append(text[0].upper() + text[1:] + rng.choice((".", ".", ".", "?", "!")))
    return pool


def _message_text(rng: random.Random, pool: list[str], length: int) -> str:
    parts: list[str] = []
    size = 0
    while size < length:
        sentence = rng.choice(pool)
        parts.append(sentence)
        size += len(sentence) + 1
    return " ".join(parts)[:length].rstrip()


def generate(path: Path, items: int, seed: int = SEED) -> None:
    """Write `items` seeded conversations as JSONL; the same seed gives the same file."""
    rng = random.Random(seed)
    pools = {lang: _sentence_pool(rng, text.split(), 3000) for lang, text in WORDS.items()}
    languages = list(pools)
    with path.open("w", encoding="utf-8") as out:
        for index in range(items):
            language = rng.choice(languages)
            pool = pools[language]
            messages = [
                {
                    "role": "user" if turn % 2 == 0 else "assistant",
                    "content": _message_text(rng, pool, rng.randint(50, 800)),
                }
                for turn in range(rng.randint(2, 6))
            ]
            record = {
                "external_id": f"conv-{index:07d}",
                "messages": messages,
                "metadata": {"model": rng.choice(MODELS), "prompt_version": rng.randint(1, 9)},
            }
            # Half carry their language; the other half go through language detection.
            if index % 2 == 0:
                record["language"] = language
            out.write(json.dumps(record, ensure_ascii=False) + "\n")


# Database and Django ---------------------------------------------------------------------------


def _admin(sql: str) -> None:
    import psycopg

    with psycopg.connect(f"{SERVER_URL}/postgres", autocommit=True) as conn:
        conn.execute(sql)


def create_database() -> None:
    _admin(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
    _admin(f'CREATE DATABASE "{DB_NAME}"')


def drop_database() -> None:
    _admin(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')


def bench_env(var_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DATABASE_URL=f"{SERVER_URL}/{DB_NAME}",
        DJANGO_SETTINGS_MODULE="annotator.settings",
        ANNOTATOR_MODE="embedded",
        # Its own var dir and key, so the benchmark leaves the developer's var/ alone.
        ANNOTATOR_VAR_DIR=str(var_dir),
        SECRET_KEY=secrets.token_urlsafe(50),
        # 100,000 realistic conversations are ~190 MB, above the default 100 MB body limit.
        ANNOTATOR_IMPORT_MAX_BYTES=str(4 * 1024**3),
        LOG_LEVEL="WARNING",
        PYTHONUNBUFFERED="1",
    )
    return env


def create_fixtures(root: Path, env: dict[str, str], slugs: list[str]) -> str:
    """A user who administers every benchmark project, and a write token for them; the key.

    Made by the benchmarked checkout's own code (`manage.py shell`), as its schema may differ.
    """
    code = f"""
from django.contrib.auth import get_user_model
from labelling.services.projects import project_create
from labelling.services.tokens import token_create
user = get_user_model().objects.create_user(username="bench")
for slug in {slugs!r}:
    project_create(slug=slug, name=slug, created_by=user)
print(token_create(user=user, project_slugs={slugs!r}, name="bench", can_write=True)[1])
"""
    shell = [sys.executable, "manage.py", "shell", "-v", "0", "-c", code]
    done = subprocess.run(shell, cwd=root, env=env, check=True, capture_output=True, text=True)
    return done.stdout.strip().splitlines()[-1]


def item_count(slug: str) -> int:
    import psycopg

    with psycopg.connect(f"{SERVER_URL}/{DB_NAME}") as conn:
        row = conn.execute(
            "SELECT count(*) FROM labelling_item i JOIN labelling_project p "
            "ON p.id = i.project_id WHERE p.slug = %s",
            [slug],
        ).fetchone()
    return row[0] if row else 0


def fail(message: str, log: Path) -> NoReturn:
    """Stop with the message and the end of the subprocess log (which goes with the temp dir)."""
    tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
    sys.exit(f"{message}\n--- end of {log.name} ---\n{tail}")


# Paths -----------------------------------------------------------------------------------------


@dataclass
class Run:
    seconds: float
    cpu_seconds: float
    peak_rss_mb: float


def run_cli(root: Path, slug: str, file: Path, env: dict[str, str], log: Path) -> Run:
    """One import_items process, fed the file through a pipe on standard input (`-`).

    The clock starts when the command first reads its input, so Django's start-up and the
    project lookup are left out and the import itself (the language model's load included) is
    timed; the CPU time is counted from the same moment.
    """
    command = [sys.executable, "manage.py", "import_items", "--project", slug, "-"]
    read_end, write_end = os.pipe()
    # A one-page pipe: the first small write returns only once the command has started reading.
    fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, 4096)
    with log.open("ab") as out:
        process = subprocess.Popen(
            [*command, "--format", "jsonl", "--no-progress"],
            cwd=root, env=env, stdin=read_end, stdout=out, stderr=out,
        )  # fmt: skip
    os.close(read_end)
    with file.open("rb") as source, open(write_end, "wb") as pipe:
        try:
            pipe.write(source.read(8192))
            pipe.flush()
            start = time.perf_counter()
            cpu_before = _cpu_seconds(process.pid)
            # Then a large pipe, so the command is not woken up for every page.
            fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, 1024 * 1024)
            while chunk := source.read(1024 * 1024):
                pipe.write(chunk)
        except BrokenPipeError:
            pass  # the command stopped early; its exit code says why
    # wait4 gives this child's own peak RSS; RUSAGE_CHILDREN would be the max over all.
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - start
    process.returncode = code = os.waitstatus_to_exitcode(status)
    if code != 0:
        fail(f"import_items failed (exit {code}).", log)
    cpu = usage.ru_utime + usage.ru_stime - cpu_before
    return Run(elapsed, cpu, usage.ru_maxrss / 1024)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name may hold spaces or parentheses; the parent pid follows its last ')'.
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"No VmHWM for pid {pid}")


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # utime and stime, the 14th and 15th fields of the line (the 12th and 13th after the name).
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _post(port: int, path: str, key: str, body, size: int) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1800, blocksize=256 * 1024)
    headers = {
        "Authorization": f"Token {key}",
        "Content-Type": "application/x-ndjson",
        "Content-Length": str(size),
    }
    try:
        conn.request("POST", path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def run_api(
    root: Path, slug: str, file: Path, items: int, env: dict[str, str], key: str, log: Path
) -> Run:
    """One import through a fresh gunicorn, after a one-item warm-up import.

    The warm-up loads what a running server has loaded already (the language model); the
    worker's peak RSS still covers it.
    """
    port = _free_port()
    command = [
        sys.executable, "-m", "gunicorn", "annotator.wsgi:application",
        "--bind", f"127.0.0.1:{port}", "--workers", "1",
        # The default 30 s would kill the worker in the middle of a slow import.
        "--timeout", "900",
    ]  # fmt: skip
    with log.open("ab") as out:
        server = subprocess.Popen(command, cwd=root, env=env, stdout=out, stderr=out)
    try:
        warmup = (json.dumps({"id": f"warm-{slug}", "messages": [
            {"role": "user", "content": "Warm the language model up, please."}]}) + "\n"
        ).encode()  # fmt: skip
        deadline = time.monotonic() + 60
        while True:
            try:
                status, answer = _post(port, "/api/v1/projects/warmup/items/", key, warmup,
                                       len(warmup))  # fmt: skip
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    fail("gunicorn did not start.", log)
                time.sleep(0.2)
        if status != 201:
            fail(f"The warm-up import answered {status}: {answer[:500]!r}", log)
        workers = _children(server.pid)
        if len(workers) != 1:
            fail(f"Expected one gunicorn worker, found {workers}", log)
        worker = workers[0]

        cpu_before = _cpu_seconds(worker)
        with file.open("rb") as body:
            start = time.perf_counter()
            status, answer = _post(
                port, f"/api/v1/projects/{slug}/items/", key, body, file.stat().st_size
            )
            elapsed = time.perf_counter() - start
        if status != 201:
            fail(f"The import answered {status}: {answer[:500]!r}", log)
        created = json.loads(answer)["created"]
        if created != items:
            fail(f"The API created {created} items, expected {items}", log)
        return Run(elapsed, _cpu_seconds(worker) - cpu_before, _peak_rss_mb(worker))
    finally:
        server.terminate()
        server.wait(timeout=30)


# Report ----------------------------------------------------------------------------------------


def print_table(rows: list[tuple[str, int, float, Run]]) -> None:
    header = ("path", "items", "file MB", "seconds", "items/s", "CPU µs/item", "peak RSS MB")
    lines = [
        (
            path,
            f"{items:,}",
            f"{file_mb:.0f}",
            f"{run.seconds:.2f}",
            f"{items / run.seconds:,.0f}",
            f"{run.cpu_seconds / items * 1e6:.0f}",
            f"{run.peak_rss_mb:.0f}",
        )
        for path, items, file_mb, run in rows
    ]
    lines.append(("goal", "", "", "", f"≥ {GOAL_ITEMS_PER_S:,}", "", "flat in file size"))
    lines.append(("Label Studio 1.23", "", "35", "", "3,400–3,800", "", "800"))
    widths = [max(len(line[i]) for line in [header, *lines]) for i in range(len(header))]

    def fmt(cells) -> str:
        first = cells[0].ljust(widths[0])
        return "  ".join([first, *(c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True))])

    print()
    print(fmt(header))
    print("  ".join("-" * w for w in widths))
    for line in lines:
        print(fmt(line))
    print()
    print("cli: timed from the command's first read of its input (start-up left out) to its exit.")
    print("api: one gunicorn worker, warmed up by a one-item import; RSS is the worker's VmHWM.")
    print("CPU: the importing process's own CPU time (PostgreSQL's is not counted).")
    print("Label Studio: PostgreSQL on the same kind of machine; its RSS is for a 35 MB request.")
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    print(f"Load average at the end: {load} ({os.cpu_count()} CPUs); other work skews the figures.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--items", type=int, nargs="+", default=list(SIZES), help="File sizes, in items."
    )
    parser.add_argument("--paths", nargs="+", choices=("cli", "api"), default=["cli", "api"])
    parser.add_argument(
        "--repeat", type=int, default=1, help="Runs of each import; the table shows the median."
    )
    parser.add_argument("--keep-db", action="store_true", help=f"Leave {DB_NAME} in place.")
    parser.add_argument(
        "--root",
        type=Path,
        default=ROOT,
        help="The checkout to benchmark (default: this one), e.g. an older commit unpacked with "
        "`git archive`, for before/after figures. Its schema must match this one's.",
    )
    args = parser.parse_args()
    root = args.root.resolve()

    with tempfile.TemporaryDirectory(prefix="bench-import-") as tmp:
        work = Path(tmp)
        log = work / "bench.log"
        env = bench_env(work / "var")
        print(f"Creating {DB_NAME} and migrating ({root}) ...", flush=True)
        create_database()
        try:
            migrate = [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"]
            subprocess.run(migrate, cwd=root, env=env, check=True)
            slugs = [
                f"{path}-{n}-{r}" for n in args.items for path in args.paths
                for r in range(args.repeat)
            ]  # fmt: skip
            key = create_fixtures(root, env, [*slugs, "warmup"])
            rows = []
            for n in args.items:
                file = work / f"conversations-{n}.jsonl"
                print(f"Generating {n:,} conversations ...", flush=True)
                generate(file, n)
                file_mb = file.stat().st_size / 1024**2
                for path in args.paths:
                    runs = []
                    for r in range(args.repeat):
                        slug = f"{path}-{n}-{r}"
                        print(f"  {path}: importing {file_mb:.0f} MB ...", flush=True)
                        if path == "cli":
                            run = run_cli(root, slug, file, env, log)
                        else:
                            run = run_api(root, slug, file, n, env, key, log)
                        stored = item_count(slug)
                        if stored != n:
                            fail(f"{slug}: {stored} items stored, expected {n}", log)
                        runs.append(run)
                    runs.sort(key=lambda run: run.seconds)
                    median = runs[len(runs) // 2]
                    rows.append((path, n, file_mb, median))
                file.unlink()
            print_table(rows)
        finally:
            if args.keep_db:
                print(f"Kept the database: {SERVER_URL}/{DB_NAME}")
            else:
                drop_database()


if __name__ == "__main__":
    main()
