"""Web benchmark: the review app under a real WSGI server and concurrent reviewers.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/faceclean .venv/bin/python bench/web.py \
        [--faces 1000000 --identities 50000 --flags 200000 --clients 20 --seconds 60]

1. Seeds a throw-away Postgres database (--database, default faceclean_webbench, on the
   server DATABASE_URL names; created here and dropped afterwards): a generated file list of
   --faces faces over --identities identities, imported through the import service (every
   path is a hard link to one of a few hundred tiny real JPEGs, so the image views read
   real files), one published round with --flags flags (one INSERT ... SELECT), and one
   signed-in reviewer per client (sessions written directly: no password hashing).
2. Serves the app with gunicorn on 127.0.0.1 (DEBUG off, production settings, HTTPS
   redirects and secure cookies off because the loopback has no TLS).
3. Runs locust headless (bench/web_locustfile.py): --clients reviewers for --seconds,
   opening the queue page (and its ?after= cursor), face cards, thumbnails and the identity
   browser, and deciding flags (htmx POSTs with the CSRF header; each reviewer owns its flags,
   so none collide), pausing --think-ms-min..--think-ms-max between requests; with
   --stress-seconds, then again without any pause (a closed loop: the server's saturation point).
4. Then (--bulk-flags N, 0 to skip) one queue-wide bulk decision through the API, as a reviewer
   would start it: POST /api/flags/bulk/ rejecting the N highest-scored open noisy flags (a
   min_score chosen so that about N match), run by a Celery worker started for it, polled on
   /api/jobs/<id>/ until done; reported as "bulk_decide": decisions and seconds from the POST
   to the job's end.
5. Prints one JSON object: p50/p95/p99 milliseconds per request kind, errors, requests,
   conflicts, throughput, and the machine's load (this bench shares its cores with the
   database, the server and the load generator).
"""
from __future__ import annotations

import argparse
import io
import json
import math
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
KINDS = ("queue", "face_card", "decision", "thumbnail", "identities")
SEED_IMAGES = 256  # distinct JPEGs; ext4 allows 65,000 links to one file
QUEUE_KIND = "noisy"


def log(message: str) -> None:
    print(f"[web bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- database ---------------------------------------------------------------------------------------

def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


def recreate_database(server_url: str, name: str, *, drop_only: bool = False) -> None:
    import psycopg2

    connection = psycopg2.connect(with_database(server_url, "postgres"))
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            if not drop_only:
                cursor.execute(f'CREATE DATABASE "{name}"')
    finally:
        connection.close()


# -- seeding ----------------------------------------------------------------------------------------

def tiny_jpeg(n: int) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (48, 48), (n * 37 % 256, n * 91 % 256, 255 - n % 256)).save(out, format="JPEG")
    return out.getvalue()


def make_tree(base: Path, faces: int, identities: int) -> tuple[Path, Path]:
    """BASE/images/id<k>/<j>.jpg (hard links to SEED_IMAGES files) and BASE/list.txt."""
    images, seeds = base / "images", base / "seeds"
    images.mkdir()
    seeds.mkdir()
    seed_paths = []
    for n in range(SEED_IMAGES):
        path = seeds / f"seed{n}.jpg"
        path.write_bytes(tiny_jpeg(n))
        seed_paths.append(str(path))
    folders = [str(images / f"id{k:06d}") for k in range(identities)]
    for folder in folders:
        os.mkdir(folder)
    link = os.link
    with open(base / "list.txt", "w", encoding="utf-8") as listing:
        lines = []
        for n in range(faces):
            identity, index = n % identities, n // identities
            link(seed_paths[n % SEED_IMAGES], f"{folders[identity]}/{index:03d}.jpg")
            lines.append(f"id{identity:06d}/{index:03d}.jpg person_{identity}\n")
            if len(lines) == 100_000:
                listing.writelines(lines)
                lines.clear()
        listing.writelines(lines)
    return base / "list.txt", images


FLAGS_SQL = """
WITH ranked AS (
    SELECT id, row_number() OVER (ORDER BY id) - 1 AS idx FROM reviewapp_identity WHERE dataset_id = %(dataset)s
), identities AS (
    SELECT array_agg(id ORDER BY idx) AS ids, count(*) AS n FROM ranked
), picked AS (
    SELECT f.id AS face_id, r.idx, random() AS r, random() AS s
    FROM reviewapp_face f JOIN ranked r ON r.id = f.identity_id
    WHERE f.dataset_id = %(dataset)s ORDER BY random() LIMIT %(flags)s
), shaped AS (
    -- other_identity: any identity but the face's own (an offset of 1..n-1 from it)
    SELECT p.*, CASE WHEN r < 0.6 THEN 'noisy' WHEN r < 0.85 THEN 'hard' ELSE 'low_norm' END AS kind,
           i.ids[1 + ((p.idx + 1 + floor(p.s * (i.n - 1))::int) %% i.n)] AS other_identity
    FROM picked p, identities i
)
INSERT INTO reviewapp_flag (round_id, kind, face_id, score, evidence, suggestion, suggested_identity_id, state)
SELECT %(round)s, kind, face_id, s,
       CASE kind
         WHEN 'noisy' THEN jsonb_build_object('theta_y', 70 + 20 * s, 'theta_1', 40 + 10 * r, 'norm', 15 + 10 * s,
                                              'reason', CASE WHEN r < 0.45 THEN 'closed_set' ELSE 'open_set' END)
         WHEN 'hard' THEN jsonb_build_object('theta_y', 55 + 10 * s, 'theta_1', 50 + 5 * r, 'norm', 20 + 5 * s,
                                             'reason', 'margin_band', 'nearest_identity_id', other_identity)
         ELSE jsonb_build_object('norm', 2 + 3 * s, 'median_norm', 21.5, 'norm_percentile', 2 * s)
       END,
       CASE WHEN kind = 'noisy' AND r < 0.45 THEN 'relabel' WHEN kind = 'hard' THEN 'keep' ELSE 'remove' END,
       CASE WHEN kind = 'noisy' AND r < 0.45 THEN other_identity END,
       'open'
FROM shaped
"""


def seed(args, work: Path) -> dict:
    """Fill the (migrated, empty) database; returns the load plan for the locust clients."""
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, get_user_model
    from django.contrib.sessions.backends.db import SessionStore
    from django.db import connection
    from django.utils import timezone

    from reviewapp.models import Dataset, Flag, Membership, Round
    from reviewapp.services.imports import dataset_import

    timings = {}
    started = time.monotonic()
    listing, images = make_tree(work, args.faces, args.identities)
    timings["files"] = round(time.monotonic() - started, 1)
    log(f"generated {args.faces} image links in {timings['files']} s")
    started = time.monotonic()
    report = dataset_import(path=listing, name="webbench", fmt="list", root=images)
    timings["import"] = round(time.monotonic() - started, 1)
    if report.faces != args.faces:
        raise RuntimeError(f"imported {report.faces} faces of {args.faces}:\n{report.text()[:2000]}")
    log(f"imported {report.faces} faces, {report.identities} identities in {time.monotonic() - started:.1f} s")

    started = time.monotonic()
    dataset = Dataset.objects.get(name="webbench")
    now = timezone.now()
    round_ = Round.objects.create(dataset=dataset, number=1, method=Round.Method.ARCFACE,
                                  status=Round.Status.PUBLISHED, started_at=now, finished_at=now,
                                  progress={"stage": "published", "percent": 100.0})
    with connection.cursor() as cursor:
        cursor.execute(FLAGS_SQL, {"dataset": dataset.pk, "flags": args.flags, "round": round_.pk})
        cursor.execute("ANALYZE reviewapp_flag")
        cursor.execute("ANALYZE reviewapp_face")
        cursor.execute("ANALYZE reviewapp_identity")
    timings["flags"] = round(time.monotonic() - started, 1)
    log(f"wrote {Flag.objects.filter(round=round_).count()} flags in {timings['flags']} s")

    # Each reviewer decides its own share of the open queue flags, highest score first,
    # so no two reviewers post to the same flag.
    phases = 2 if args.stress_seconds else 1
    queue_flags = list(Flag.objects.filter(round=round_, kind=QUEUE_KIND).order_by("-score", "-id")
                       .values_list("id", flat=True)[: args.clients * phases * 3000])
    rng = random.Random(7)
    all_flags = list(Flag.objects.filter(round=round_).values_list("id", "face_id"))
    rng.shuffle(all_flags)
    reviewers = []
    users = get_user_model()
    for i in range(args.clients):
        user = users(username=f"bench-reviewer-{i}")
        user.set_unusable_password()
        user.save()
        Membership.objects.create(user=user, dataset=dataset, role=Membership.Role.REVIEWER)
        session = SessionStore()
        session[SESSION_KEY] = str(user.pk)
        session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
        session[HASH_SESSION_KEY] = user.get_session_auth_hash()
        session.create()
        sample = all_flags[i * 500:(i + 1) * 500] or all_flags[:500]
        share = queue_flags[i::args.clients]
        reviewers.append({
            "session": session.session_key,
            # One part of its share per load phase; pop() takes from the end, so the
            # highest-scored first.
            "flags": [list(reversed(share[p::phases])) for p in range(phases)],
            "cards": [flag_id for flag_id, _ in sample],
            "faces": [face_id for _, face_id in sample],
        })
    from django.urls import reverse
    from rest_framework.authtoken.models import Token

    # The bulk job's caller: a reviewer of its own, with an API token (no CSRF dance).
    bulk_user = users(username="bench-bulk")
    bulk_user.set_unusable_password()
    bulk_user.save()
    Membership.objects.create(user=bulk_user, dataset=dataset, role=Membership.Role.REVIEWER)
    return {"queue_url": f"/datasets/{dataset.pk}/review/{QUEUE_KIND}/", "reviewers": reviewers,
            "identities_url": reverse("identity-list", args=[dataset.pk]), "dataset": dataset.pk,
            "round": round_.pk, "bulk_token": Token.objects.create(user=bulk_user).key, "seed_seconds": timings}


def phase_plan(plan: dict, phase: int, think_ms: list[float], warmup_s: float, report: Path) -> dict:
    """The locust clients' plan for one load phase: its own flags, think time, warm-up and report file."""
    reviewers = [{**r, "flags": r["flags"][phase]} for r in plan["reviewers"]]
    return {**plan, "reviewers": reviewers, "think_ms": think_ms, "warmup_s": warmup_s, "report": str(report)}


# -- server and load --------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_env(args, database_url: str, secret_key: str, var_dir: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("DJANGO_SETTINGS_MODULE", "DJANGO_ALLOW_ASYNC_UNSAFE")}
    env.update({
        "DJANGO_SETTINGS_MODULE": "config.settings", "DEBUG": "0", "SECRET_KEY": secret_key,
        "ALLOWED_HOSTS": "127.0.0.1", "DATABASE_URL": database_url, "FACECLEAN_VAR_DIR": str(var_dir),
        # Plain HTTP on the loopback: no HTTPS redirect, HSTS or secure-only cookies.
        "SECURE_SSL_REDIRECT": "0", "SESSION_COOKIE_SECURE": "0", "CSRF_COOKIE_SECURE": "0",
        "SECURE_HSTS_SECONDS": "0", "LOG_LEVEL": "WARNING", "DATABASE_CONN_MAX_AGE": "600",
    })
    return env


def start_server(args, env: dict, port: int, log_path: Path) -> subprocess.Popen:
    command = [str(BIN / "gunicorn"), "config.wsgi:application", "--bind", f"127.0.0.1:{port}",
               "--workers", str(args.workers), "--threads", str(args.threads), "--worker-class", "gthread",
               "--log-level", "warning", "--chdir", str(ROOT)]
    log(f"starting {' '.join(command[1:])}")
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log_path.open("wb"), stderr=subprocess.STDOUT,
                               start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"gunicorn exited with {process.returncode}: {log_path.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/accounts/login/", timeout=2) as response:
                if response.status == 200:
                    return process
        except OSError:
            time.sleep(0.3)
    raise RuntimeError("gunicorn did not answer within 60 s")


def stop_server(process: subprocess.Popen | None) -> None:
    if process is None or process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def start_worker(env: dict, log_path: Path) -> subprocess.Popen:
    """A Celery worker for the default queue (bulk jobs), as scripts/run.sh starts it."""
    command = [str(BIN / "celery"), "-A", "config", "worker", "--loglevel", "WARNING", "--concurrency", "1",
               "-Q", "default", "-n", f"webbench-{os.getpid()}@%h"]
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=log_path.open("wb"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def bulk_min_score(plan: dict, flags: int) -> float:
    """The score of the flags-th highest open noisy flag: a min_score that about `flags` match."""
    from reviewapp.models import Flag

    scores = (Flag.objects.filter(round_id=plan["round"], kind=QUEUE_KIND, state=Flag.State.OPEN)
              .order_by("-score").values_list("score", flat=True))
    picked = list(scores[flags - 1:flags]) or list(scores.reverse()[:1])
    return float(picked[0]) if picked else 0.0


def api(port: int, token: str, path: str, body: dict | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Token {token}", "Content-Type": "application/json", "Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def bulk_phase(args, plan: dict, port: int, env: dict, work: Path) -> dict:
    """Time one queue-wide bulk rejection of about --bulk-flags flags, start to finish."""
    min_score = bulk_min_score(plan, args.bulk_flags)
    worker = start_worker(env, work / "celery.log")
    try:
        time.sleep(3)  # the worker's start-up is not the job's time
        log(f"bulk: rejecting open {QUEUE_KIND} flags scoring >= {min_score:.6f}")
        started = time.monotonic()
        code, job = api(port, plan["bulk_token"], "/api/flags/bulk/",
                        {"dataset": plan["dataset"], "kind": QUEUE_KIND, "min_score": min_score, "action": "reject"})
        if code != 202:
            raise RuntimeError(f"POST /api/flags/bulk/ answered {code}: {job}")
        deadline = started + args.bulk_timeout
        while job.get("status") not in ("done", "failed"):
            if time.monotonic() > deadline:
                raise RuntimeError(f"bulk job {job.get('id')} not done after {args.bulk_timeout} s: {job}")
            time.sleep(0.25)
            code, job = api(port, plan["bulk_token"], f"/api/jobs/{job['id']}/")
        seconds = time.monotonic() - started
    finally:
        stop_server(worker)
    if job["status"] != "done":
        raise RuntimeError(f"bulk job failed: {job.get('error')}\n{(work / 'celery.log').read_text()[-2000:]}")
    result = job.get("result") or {}
    decided = result.get("decided")
    decided = len(decided) if isinstance(decided, list) else int(decided or 0)
    conflicts = result.get("conflicts")
    return {"decisions": decided, "seconds": round(seconds, 1), "min_score": min_score,
            "conflicts": len(conflicts) if isinstance(conflicts, list) else int(conflicts or 0),
            "decisions_per_s": round(decided / seconds, 1) if seconds else None}


def cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def run_load(args, plan_path: Path, port: int, work: Path, seconds: float, cpu_after: float):
    """Run locust for `seconds`; also notes the machine's CPU counters `cpu_after` seconds in
    (when the measurement starts) as .cpu_at_warmup = (busy, total, monotonic time)."""
    command = [str(BIN / "locust"), "-f", str(ROOT / "bench" / "web_locustfile.py"), "--headless",
               "--users", str(args.clients), "--spawn-rate", str(args.clients), "--run-time", f"{math.ceil(seconds)}s",
               "--host", f"http://127.0.0.1:{port}", "--only-summary", "--stop-timeout", "10",
               "--loglevel", "WARNING", "--exit-code-on-error", "0"]
    env = {**os.environ, "FACECLEAN_WEBBENCH_PLAN": str(plan_path)}
    log(f"load: {args.clients} clients for {seconds} s (the first {cpu_after} s are warm-up)")
    with subprocess.Popen(command, cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True) as process:
        time.sleep(cpu_after)
        at_warmup = (*cpu_times(), time.monotonic())
        stdout, stderr = process.communicate(timeout=seconds + 120)
    completed = subprocess.CompletedProcess(command, process.returncode, stdout, stderr)
    completed.cpu_at_warmup = at_warmup
    return completed


def percentiles(times: list[float]) -> dict:
    import numpy as np

    if not times:
        return {"p50": None, "p95": None, "p99": None, "requests": 0}
    p50, p95, p99 = np.percentile(np.asarray(times), [50, 95, 99])
    return {"p50": round(float(p50), 1), "p95": round(float(p95), 1), "p99": round(float(p99), 1),
            "requests": len(times)}


def load_phase(args, plan: dict, phase: int, think_ms: list[float], seconds: int, port: int, work: Path) -> dict:
    """One locust run; its figures, with the machine's CPU use and load while it ran."""
    plan_path, report_path = work / f"plan{phase}.json", work / f"report{phase}.json"
    plan_path.write_text(json.dumps(phase_plan(plan, phase, think_ms, args.warmup_seconds, report_path)))
    load = {"at_start": round(os.getloadavg()[0], 2)}
    completed = run_load(args, plan_path, port, work, seconds + args.warmup_seconds, cpu_after=args.warmup_seconds)
    busy0, total0, started = completed.cpu_at_warmup
    elapsed = time.monotonic() - started
    busy1, total1 = cpu_times()
    load["at_end"] = round(os.getloadavg()[0], 2)
    if not report_path.exists():
        raise RuntimeError(f"locust wrote no report (exit {completed.returncode}):\n"
                           f"{completed.stdout[-3000:]}\n{completed.stderr[-3000:]}")
    report = json.loads(report_path.read_text())
    return summarise(report, min(elapsed, seconds), (busy1 - busy0) / max(1, total1 - total0), load,
                     think_ms, seconds, args)


def summarise(report: dict, seconds: float, cpu_busy: float, load: dict, think_ms, run_seconds, args) -> dict:
    result = {}
    for kind in KINDS:
        result[kind] = {**percentiles(report["times"].get(kind, [])), "errors": report["failures"].get(kind, 0)}
    result["errors"] = sum(report["failures"].values())
    result["requests"] = sum(len(t) for t in report["times"].values())
    result["conflicts"] = report["conflicts"]
    if report["conflict_samples"]:
        result["conflict_samples"] = report["conflict_samples"]
    result["decided"] = report["decided"]
    result["requests_per_s"] = round(result["requests"] / seconds, 1)
    result["setup"] = {
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "faces": args.faces, "identities": args.identities, "flags": args.flags, "clients": args.clients,
        "seconds": run_seconds, "warmup_seconds": args.warmup_seconds, "think_ms": think_ms,
        "server": f"gunicorn gthread, {args.workers} workers x {args.threads} threads, DEBUG off",
        "load_tool": "locust (FastHttpUser), same machine",
        "cpu_count": os.cpu_count(), "machine_cpu_busy_during_load": round(cpu_busy, 2),
        "loadavg": load, "out_of_flags": report["out_of_flags"],
        "queue_pages_after_cursor": report["queue_pages_after_cursor"],
    }
    return result


# -- main -------------------------------------------------------------------------------------------

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=int, default=1_000_000)
    parser.add_argument("--identities", type=int, default=50_000)
    parser.add_argument("--flags", type=int, default=200_000)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--workers", type=int, default=3, help="gunicorn worker processes")
    parser.add_argument("--threads", type=int, default=4, help="threads per gunicorn worker")
    parser.add_argument("--think-ms-min", type=float, default=250.0,
                        help="a client's pause between requests is uniform in [min, max] ms")
    parser.add_argument("--think-ms-max", type=float, default=750.0)
    parser.add_argument("--stress-seconds", type=int, default=0,
                        help="then as long again with no pause at all (closed loop), reported under 'stress'")
    parser.add_argument("--warmup-seconds", type=float, default=5.0,
                        help="each load phase runs this much longer; requests in its first seconds are not counted")
    parser.add_argument("--bulk-flags", type=int, default=10_000,
                        help="after the load, time one queue-wide bulk decision of about this many flags (0: skip)")
    parser.add_argument("--bulk-timeout", type=float, default=600.0, help="seconds the bulk job may take")
    parser.add_argument("--database", default="faceclean_webbench")
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args()
    if args.identities > args.faces or min(args.faces, args.identities, args.clients, args.seconds) < 1:
        parser.error("need faces >= identities >= 1, clients >= 1, seconds >= 1")
    server_url = os.environ.get("DATABASE_URL", "")
    if not server_url.startswith("postgres"):
        print("bench/web.py needs DATABASE_URL pointing at a Postgres server", file=sys.stderr)
        return 2

    database_url = with_database(server_url, args.database)
    secret_key = secrets.token_urlsafe(50)  # sessions written here must verify in the server
    work = Path(tempfile.mkdtemp(prefix="faceclean-webbench-"))
    var_dir = work / "var"
    os.environ.update({"DATABASE_URL": database_url, "SECRET_KEY": secret_key, "FACECLEAN_VAR_DIR": str(var_dir),
                       "DJANGO_SETTINGS_MODULE": "config.settings_test"})
    sys.path.insert(0, str(ROOT))
    load_before = round(os.getloadavg()[0], 2)
    server = None
    recreate_database(server_url, args.database)
    try:
        import django
        from django.core.management import call_command

        django.setup()
        call_command("migrate", verbosity=0)
        plan = seed(args, work)
        from django.db import connections

        connections.close_all()
        port = free_port()
        env = server_env(args, database_url, secret_key, var_dir)
        server = start_server(args, env, port, work / "gunicorn.log")
        result = load_phase(args, plan, 0, [args.think_ms_min, args.think_ms_max], args.seconds, port, work)
        result["setup"]["loadavg"]["before_seeding"] = load_before
        result["setup"]["seed_seconds"] = plan["seed_seconds"]
        if args.stress_seconds:
            result["stress"] = load_phase(args, plan, 1, [0.0, 0.0], args.stress_seconds, port, work)
        if args.bulk_flags:
            result["bulk_decide"] = bulk_phase(args, plan, port, env, work)
        server_log = (work / "gunicorn.log").read_text(errors="replace")
        if "Traceback" in server_log or "[ERROR]" in server_log:
            log("gunicorn log:\n" + server_log[-3000:])
        text = json.dumps(result)
        print(text)
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    finally:
        stop_server(server)
        try:
            from django.db import connections

            connections.close_all()
        except Exception:  # django never set up
            pass
        recreate_database(server_url, args.database, drop_only=True)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
