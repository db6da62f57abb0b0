"""Locust clients for bench/web.py: reviewers working a review queue.

Not run on its own: bench/web.py writes the plan (sessions, flags, faces) to the JSON file
named by FACECLEAN_WEBBENCH_PLAN and starts `locust --headless` on this file. Each simulated
reviewer is one signed-in user; between requests it pauses think_ms (uniform). In each
cycle of 17 requests (2 queue pages, 3 cards, 3 decisions, 8 thumbnails, 1 identity list) it:
  - opens the queue page, every other time following its "Load more" cursor (?after=);
  - opens a face card (/flags/<id>/);
  - decides a flag (POST /flags/<id>/decide, htmx, X-CSRFToken): each reviewer has its own
    open flags, so no two reviewers decide the same one;
  - loads a face thumbnail (/faces/<id>/thumbnail);
  - opens the identity browser (/datasets/<id>/identities/: identities by name, first page).
Every response time after the plan's warm-up (warmup_s) is recorded (milliseconds,
unrounded) and written with the counts of failures and conflicts to the plan's "report"
file when the test stops.
"""
import itertools
import json
import os
import random
import re
import time
from collections import defaultdict

from locust import FastHttpUser, events, task

PLAN = json.loads(open(os.environ["FACECLEAN_WEBBENCH_PLAN"], encoding="utf-8").read())
_next_reviewer = itertools.count()
_times: dict[str, list[float]] = defaultdict(list)
_failures: dict[str, int] = defaultdict(int)
_counts = {"conflicts": 0, "decided": 0, "out_of_flags": 0, "queue_pages_after_cursor": 0}
_conflict_samples: list[str] = []
_MESSAGE = re.compile(r'<p class="message \w+">([^<]*)</p>')
# Requests per cycle of 17: every kind once first (so even a run of a few seconds measures
# each), then the rest of the mix in random order.
_MIX = {"queue": 2, "face_card": 3, "decision": 3, "thumbnail": 8, "identities": 1}
_AFTER = re.compile(r'href="[^"]*[?&](?:amp;)?after=([^"&]+)')
_CONFLICT = 'class="message warning"'
_REFUSED = 'class="message error"'


_started = time.monotonic()


def _measuring() -> bool:
    """False during the warm-up: every client starts at once with a queue page, and each
    server worker compiles its templates on its first requests; neither is steady state."""
    return time.monotonic() - _started >= PLAN.get("warmup_s", 0)


@events.request.add_listener
def _record(request_type, name, response_time, response_length, exception=None, **_):
    if not _measuring():
        return
    _times[name].append(float(response_time))
    if exception is not None:
        _failures[name] += 1


@events.test_stop.add_listener
def _report(**_):
    with open(PLAN["report"], "w", encoding="utf-8") as out:
        json.dump({"times": _times, "failures": _failures, "conflict_samples": _conflict_samples, **_counts}, out)


class Reviewer(FastHttpUser):
    def wait_time(self):
        low, high = PLAN["think_ms"]
        return random.uniform(low, high) / 1000.0

    def on_start(self):
        mine = PLAN["reviewers"][next(_next_reviewer) % len(PLAN["reviewers"])]
        self.open_flags = list(mine["flags"])
        self.cards = mine["cards"]
        self.faces = mine["faces"]
        self.queue_url = PLAN["queue_url"]
        self.after = None
        self.client.cookiejar.set_cookie(_cookie("sessionid", mine["session"]))
        self.csrf = None
        self.schedule = []
        self.follow = True
        self.queue()  # a real first page view; it also sets the CSRF cookie

    @task
    def step(self):
        if not self.schedule:
            rest = [name for name, weight in _MIX.items() for _ in range(weight - 1)]
            random.shuffle(rest)
            self.schedule = list(reversed(["face_card", "decision", "thumbnail", "identities", "queue", *rest]))
        getattr(self, self.schedule.pop())()

    def _csrf_token(self):
        for cookie in self.client.cookiejar:
            if cookie.name == "csrftoken":
                return cookie.value
        return None

    def queue(self):
        url = self.queue_url
        self.follow = not self.follow  # every other visit: the next page
        if self.after and self.follow:
            url = f"{self.queue_url}?after={self.after}"
            _counts["queue_pages_after_cursor"] += _measuring()
        with self.client.get(url, name="queue", catch_response=True) as response:
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}")
                return
            found = _AFTER.search(response.text or "")
            self.after = found.group(1) if found else None
            self.csrf = self._csrf_token() or self.csrf

    def face_card(self):
        flag_id = random.choice(self.cards)
        with self.client.get(f"/flags/{flag_id}/", name="face_card", catch_response=True) as response:
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}")

    def decision(self):
        if not self.open_flags:
            _counts["out_of_flags"] += _measuring()
            return
        flag_id = self.open_flags.pop()
        action = random.choice(("confirm", "reject"))
        headers = {"HX-Request": "true", "X-CSRFToken": self.csrf or ""}
        with self.client.post(f"/flags/{flag_id}/decide", data={"action": action}, headers=headers,
                              name="decision", catch_response=True) as response:
            body = response.text or ""
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}")
            elif _REFUSED in body:
                response.failure("decision refused")
            elif _CONFLICT in body:
                # Someone decided this flag first: the app answers with the card as it stands.
                _counts["conflicts"] += _measuring()
                if len(_conflict_samples) < 5:
                    found = _MESSAGE.search(body)
                    _conflict_samples.append(f"flag {flag_id}: {found.group(1) if found else body[:200]}")
            else:
                _counts["decided"] += _measuring()

    def identities(self):
        with self.client.get(PLAN["identities_url"], name="identities", catch_response=True) as response:
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}")

    def thumbnail(self):
        face_id = random.choice(self.faces)
        with self.client.get(f"/faces/{face_id}/thumbnail", name="thumbnail", catch_response=True) as response:
            if response.status_code != 200 or not (response.content or b"").startswith(b"\xff\xd8"):
                response.failure(f"HTTP {response.status_code}, not a JPEG")


def _cookie(name, value):
    from http.cookiejar import Cookie

    return Cookie(version=0, name=name, value=value, port=None, port_specified=False, domain="127.0.0.1",
                  domain_specified=False, domain_initial_dot=False, path="/", path_specified=True,
                  secure=False, expires=None, discard=True, comment=None, comment_url=None, rest={})
