"""Shared fixtures, and the run's hygiene: tests that need the real face data skip with a
clear message without it (and the run counts them at the end); the run removes its temporary
folder and broker keys (config/settings_test.py names them per run) and fails if a folder of
its own is left in the temp directory."""
import os
import sys
import tempfile
from pathlib import Path

import pytest

# A folder holding att_faces/ and lfw/ (the layout of ../shared/data); it wins over the default.
DATA_ENV = "FACECLEAN_TEST_DATA"
DEFAULT_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
MISSING_DATA = "face data not found"


def face_data_root() -> Path:
    given = os.environ.get(DATA_ENV)
    return Path(given).expanduser() if given else DEFAULT_DATA


def _require(name: str) -> Path:
    path = face_data_root() / name
    if not path.exists():
        pytest.skip(f"{MISSING_DATA}: no {path} (set {DATA_ENV} to a folder holding att_faces/ and lfw/)")
    return path


@pytest.fixture
def att_root() -> Path:
    return _require("att_faces")


@pytest.fixture
def lfw_root() -> Path:
    return _require("lfw")


@pytest.fixture
def user(db, django_user_model):
    return django_user_model.objects.create_user(username="reviewer", password="pw-reviewer-1")


@pytest.fixture
def staff(db, django_user_model):
    return django_user_model.objects.create_user(username="boss", password="pw-boss-1", is_staff=True)


@pytest.fixture(autouse=True)
def fresh_cache():
    """Sign-in and API throttle counters live in the cache: a suite's hundreds of anonymous
    requests must not add up to a 429 in some later test."""
    from django.core.cache import caches

    for cache in caches.all():
        cache.clear()
    yield


# -- the end of the run ---------------------------------------------------------------------------

def _test_settings():
    """config.settings_test if this run uses it (it names the run's folders and keys), else None."""
    return sys.modules.get("config.settings_test")


def _own_temp_folders() -> set[Path]:
    test_settings = _test_settings()
    return set(Path(tempfile.gettempdir()).glob(f"{test_settings.TEST_TEMP_PREFIX}*")) if test_settings else set()


def pytest_report_header(config):
    test_settings = _test_settings()
    if test_settings is None:
        return None
    database = test_settings.DATABASES["default"]["TEST"]["NAME"]
    prefix = test_settings.CELERY_BROKER_TRANSPORT_OPTIONS.get("global_keyprefix")
    broker = f"broker keys {prefix}*" if prefix else "broker in the var dir"
    return f"faceclean run {test_settings.TEST_RUN}: test database {database}, {broker}, var dir {test_settings.VAR_DIR}"


def pytest_sessionstart(session):
    session.config._faceclean_temp_before = _own_temp_folders()


def _delete_broker_keys(test_settings) -> None:
    """This run's queues and bindings in Redis (unconsumed messages included)."""
    prefix = test_settings.CELERY_BROKER_TRANSPORT_OPTIONS.get("global_keyprefix")
    if not prefix:
        return
    import redis

    try:
        client = redis.Redis.from_url(test_settings.CELERY_BROKER_URL, socket_connect_timeout=2)
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()
    except redis.RedisError:  # the broker is gone: nothing of ours can be left there either
        pass


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session, exitstatus):
    """After every fixture's teardown (the test database is dropped by then), also when the run
    was interrupted: pytest tears the fixtures down in its own pytest_sessionfinish then."""
    test_settings = _test_settings()
    if test_settings is None:
        return
    test_settings.remove_test_var_dir()
    _delete_broker_keys(test_settings)
    # A folder that existed before this session (a run this one is nested in) is not ours.
    before = getattr(session.config, "_faceclean_temp_before", set()) - {Path(test_settings.VAR_DIR)}
    left = sorted(_own_temp_folders() - before)
    session.config._faceclean_temp_left = left
    if left and session.exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    missing = [r for r in terminalreporter.stats.get("skipped", []) if MISSING_DATA in str(r.longrepr)]
    if missing:
        terminalreporter.write_line(
            f"{len(missing)} test{'s' if len(missing) != 1 else ''} skipped for lack of face data "
            f"(looked in {face_data_root()}): set {DATA_ENV} to a folder holding att_faces/ and lfw/ to run them",
            yellow=True)
    for folder in getattr(config, "_faceclean_temp_left", []):
        terminalreporter.write_line(f"ERROR: the run left {folder} in the temp directory", red=True, bold=True)
