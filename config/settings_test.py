"""Test settings: the real settings with a fixed key, a throw-away var dir and per-run names.
DATABASE_URL and CELERY_BROKER_URL are honoured as usual (CI points them at Postgres and Redis).

Two test runs on one machine may share one Postgres and one Redis: each run gets an id
(FACECLEAN_TEST_RUN, random unless given) that names its test database, prefixes its broker keys
and names its var dir. The id and the var dir travel in the environment, so the real worker and
the commands the tests start as subprocesses use this run's database, queues and files.
"""
import atexit
import os
import secrets
import shutil
import tempfile

os.environ.setdefault("SECRET_KEY", "test-only-secret-key-with-enough-length-and-entropy-0123456789")
TEST_RUN = os.environ.setdefault("FACECLEAN_TEST_RUN", secrets.token_hex(4))
# Every temporary folder of this run starts with it (tests/conftest.py checks none is left).
TEST_TEMP_PREFIX = f"faceclean-test-{TEST_RUN}-"
# Created only by the process that starts the run: a worker inherits FACECLEAN_VAR_DIR, and
# must neither make a folder of its own nor delete the run's.
TEST_VAR_DIR_CREATED = "FACECLEAN_VAR_DIR" not in os.environ
if TEST_VAR_DIR_CREATED:
    os.environ["FACECLEAN_VAR_DIR"] = tempfile.mkdtemp(prefix=TEST_TEMP_PREFIX)

from .settings import *  # noqa: E402,F401,F403


def remove_test_var_dir() -> None:
    """Delete the var dir this process created (pytest's session end, or exit for a script)."""
    if TEST_VAR_DIR_CREATED:
        shutil.rmtree(VAR_DIR, ignore_errors=True)


atexit.register(remove_test_var_dir)

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
SECURE_SSL_REDIRECT = False

if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    # A file, not memory, so that a real worker process can share the test database.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test.sqlite3")}
else:
    # pytest-django would name it test_<NAME> for every run alike; it drops it at the end
    # unless --reuse-db (give FACECLEAN_TEST_RUN a fixed value to reuse one).
    DATABASES["default"]["TEST"] = {"NAME": f"test_{DATABASES['default']['NAME']}_{TEST_RUN}"}

if CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
    # Queues, bindings and unacknowledged messages of this run under a key prefix of its own:
    # a purge or a worker of another run never touches them. tests/conftest.py deletes them.
    CELERY_BROKER_TRANSPORT_OPTIONS = {**CELERY_BROKER_TRANSPORT_OPTIONS, "global_keyprefix": f"faceclean-test-{TEST_RUN}:"}
