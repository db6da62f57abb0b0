"""Counting failed sign-ins and failed API tokens, per account and per client address.

Each counter lives in the cache for one window that starts at its first failure; at the limit
every attempt is refused (the right password too) until the window passes, so guessing costs
the window per `limit` tries. With several web processes, CACHE_URL must point at Redis for the
counters to be shared (the per-process default multiplies the limits by the process count).

The address is REMOTE_ADDR: behind a reverse proxy every client shares the proxy's address,
so there the per-address limit counts everyone and the per-account one does the work."""
import hashlib
import math
import time

from django.conf import settings
from django.core.cache import cache

_PREFIX = "signin-failures"


def _key(kind: str, value: str) -> str:
    # Hashed: user names and addresses may hold characters a cache key (memcached) refuses.
    return f"{_PREFIX}:{kind}:{hashlib.sha256(value.encode('utf-8', 'surrogatepass')).hexdigest()}"


def _normal_username(username: str) -> str:
    return (username or "").strip().lower()


def client_address(request) -> str:
    return request.META.get("REMOTE_ADDR") or "unknown"


def _wait(kind: str, value: str, limit: int) -> int:
    """Seconds left in the window when the counter reached limit, else 0."""
    state = cache.get(_key(kind, value))
    if not state or state["count"] < limit:
        return 0
    return max(1, math.ceil(state["until"] - time.time()))


def _count_failure(kind: str, value: str) -> None:
    window = settings.LOGIN_FAILURE_WINDOW_SECONDS
    key = _key(kind, value)
    state = cache.get(key)
    now = time.time()
    if not state or state["until"] <= now:
        state = {"count": 0, "until": now + window}
    # Read-modify-write: two failures at the same instant may count once. That lets a few extra
    # guesses through under load, never blocks anyone wrongly, and needs no lock.
    state["count"] += 1
    cache.set(key, state, timeout=max(1, math.ceil(state["until"] - now)))


def signin_wait_seconds(*, username: str, address: str) -> int:
    """How long sign-ins for this account or from this address are refused (0: not refused)."""
    return max(_wait("account", _normal_username(username), settings.LOGIN_FAILURE_LIMIT),
               _wait("address", address, settings.LOGIN_ADDRESS_FAILURE_LIMIT))


def signin_failure_count(*, username: str, address: str) -> None:
    _count_failure("account", _normal_username(username))
    _count_failure("address", address)


def signin_success_clear(*, username: str) -> None:
    """The account's count starts over; the address's does not (one known password must not
    reset an address guessing at others)."""
    cache.delete(_key("account", _normal_username(username)))


def token_wait_seconds(*, address: str) -> int:
    return _wait("token", address, settings.API_TOKEN_FAILURE_LIMIT)


def token_failure_count(*, address: str) -> None:
    _count_failure("token", address)
