#!/usr/bin/env bash
# Installs FaceClean with its test tools and runs every test; arguments go to pytest.
# Postgres and Redis are used when DATABASE_URL / CELERY_BROKER_URL are set, or found on
# this machine's default ports; otherwise the suite runs on SQLite and the filesystem broker.
# Each run has its own test database, broker key prefix and temporary folder (named by
# FACECLEAN_TEST_RUN, see config/settings_test.py), so runs at once on one machine do not collide.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh --dev

# Browser tests drive Debian's chromium; install it where we may (they skip without it).
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "test: installing chromium for the browser tests"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1 \
    || echo "test: chromium could not be installed; browser tests will skip"
fi

reachable() { .venv/bin/python -c "import socket,sys; socket.create_connection(('127.0.0.1', $1), 1)" 2>/dev/null; }
if [ -z "${DATABASE_URL:-}" ] && reachable 5432; then
  export DATABASE_URL=postgres://postgres@127.0.0.1:5432/faceclean
fi
if [ -z "${CELERY_BROKER_URL:-}" ] && reachable 6379; then
  export CELERY_BROKER_URL=redis://127.0.0.1:6379/0
fi
echo "test: database ${DATABASE_URL:-sqlite (embedded)}, broker ${CELERY_BROKER_URL:-filesystem (embedded)}"

exec .venv/bin/python -m pytest "$@"
