"""The round page's flag table, its notes and charts agree and say why mined, published and the
angle chart's bands differ (issue 11 point 6 e)."""
import re

import pytest
from django.urls import reverse
from django.utils import timezone

from reviewapp.models import Membership
from tests.factories import DatasetFactory, MembershipFactory, RoundFactory

# The round: the angle chart's legend said hard 60 / noisy 70, the table hard 3 / noisy 75.
SUMMARY = {
    "angles": {"source": "head", "counted": "all", "theta_y": [30.0, 50.0, 70.0], "theta_1": [80.0, 55.0, 40.0],
               "band": [0, 1, 2], "counts": {"easy": 870, "hard": 60, "noisy": 70}, "margin_deg": 28.6,
               "margin_m1_deg": 8.6},
    "mined": {"noisy": 80, "hard": 5, "low_norm": 2},
    "flags": {"noisy": 75, "hard": 3, "low_norm": 2, "duplicate_identity": 0, "near_duplicate": 0},
    "already_decided": 4,
    "dropped": {"face_removed": 1, "already_true": 0, "changed_during_round": 2, "merged": 0},
    "superseded": {},
}


@pytest.fixture
def reviewer(db, django_user_model):
    return django_user_model.objects.create_user(username="rev", password="pw-rev-1")


def _round(reviewer, summary):
    dataset = DatasetFactory()
    MembershipFactory(user=reviewer, dataset=dataset, role=Membership.Role.REVIEWER)
    return RoundFactory(dataset=dataset, number=1, finished_at=timezone.now(), summary=summary,
                        progress={"flags": 80, "already_decided": 4, "dropped_during_round": 3})


def test_the_table_shows_mined_not_asked_and_published_per_kind(client, reviewer):
    round_ = _round(reviewer, SUMMARY)
    client.force_login(reviewer)
    response = client.get(reverse("round-detail", args=[round_.pk]))
    assert response.status_code == 200
    html = response.content.decode()
    rows = re.findall(r'<tr><td><span class="dot kind-(\w+)"></span>[^<]+</td><td>(\d+)</td><td>(\d+)</td>'
                      r'<td class="published">(\d+)</td>', html)
    assert rows[:3] == [("noisy", "80", "5", "75"), ("hard", "5", "2", "3"), ("low_norm", "2", "0", "2")]
    text = re.sub(r"\s+", " ", html)
    assert "Mining found 87 candidates; 80 were published as flags." in text
    assert "4 were not asked because reviewers had already answered the same question in an earlier round." in text
    assert "1 was dropped because their face was removed or marked low quality while the round ran." in text
    assert "2 were dropped because a reviewer decided about their face while the round ran." in text
    assert "colours faces by band, not by flag: its legend (easy 870, hard 60, noisy 70)" in text
    assert "So the band counts and the flag counts differ." in text


def test_the_charts_say_bands_and_published(client, reviewer):
    round_ = _round(reviewer, SUMMARY)
    client.force_login(reviewer)
    angles = client.get(reverse("round-chart", args=[round_.pk, "angles"])).content.decode()
    assert "hard band (60 faces)" in angles and "noisy band (70 faces)" in angles and "bands, not flags" in angles
    flags = client.get(reverse("round-chart", args=[round_.pk, "flags"])).content.decode()
    assert "Flags published per kind: 80 of 87 mined" in flags
    assert "75 of 80" in flags and "mined, not asked" in flags


def test_a_round_published_before_mined_counts_were_kept_shows_published_only(client, reviewer):
    summary = {k: v for k, v in SUMMARY.items() if k not in ("mined", "dropped")}
    round_ = _round(reviewer, summary)
    client.force_login(reviewer)
    html = client.get(reverse("round-detail", args=[round_.pk])).content.decode()
    assert "<th>Mined</th>" not in html and "Mining found" not in html
    assert re.search(r'<span class="dot kind-noisy"></span>Noisy</td><td class="published">75</td>', html)
    flags = client.get(reverse("round-chart", args=[round_.pk, "flags"])).content.decode()
    assert "Flags published per kind: 80<" in flags or "Flags published per kind: 80" in flags
    assert "mined" not in flags
