"""Test settings: the real settings with a fixed key and a throw-away var dir.
DATABASE_URL and CELERY_BROKER_URL are honoured as usual (CI points them at Postgres and Redis)."""
import os
import tempfile

os.environ.setdefault("SECRET_KEY", "test-only-secret-key-with-enough-length-and-entropy-0123456789")
os.environ.setdefault("FACECLEAN_VAR_DIR", tempfile.mkdtemp(prefix="faceclean-test-"))

from .settings import *  # noqa: E402,F401,F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
SECURE_SSL_REDIRECT = False

if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    # A file, not memory, so that a real worker process can share the test database.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test.sqlite3")}
