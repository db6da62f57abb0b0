"""Shared fixtures. Tests that need ../shared/data skip with a clear message without it."""
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
LFW_ROOT = SHARED_DATA / "lfw"
ATT_ROOT = SHARED_DATA / "att_faces"


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real face data not found at {path} (../shared/data is absent on this machine)")
    return path


@pytest.fixture
def att_root() -> Path:
    return _require(ATT_ROOT)


@pytest.fixture
def lfw_root() -> Path:
    return _require(LFW_ROOT)


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
