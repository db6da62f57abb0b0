"""Reads for the identity list and the face finder.

The list is keyset-paged on the identity id (no OFFSET, no COUNT over the dataset). By name it
walks identity_dataset_name and counts the page's own identities; by size, open flags or noise
estimate it sorts a per-dataset table of counts that one GROUP BY over the faces and two over the
latest round's flags build (about 1 s at 50K identities and 1M faces on Postgres), cached for a
minute rather than recounted on every page view.
"""
from __future__ import annotations

from dataclasses import dataclass

from django.core.cache import cache
from django.db.models import Count, Q

from ..models import Face, Flag, Identity, Round, Source
from .identities import latest_published_round

IDENTITY_PAGE = 50
FIND_LIMIT = 20
IDENTITY_SORTS = {"name": "name", "size": "most faces", "flags": "most open flags", "noise": "highest noise estimate"}
TABLE_CACHE_SECONDS = 60


@dataclass
class IdentityRow:
    identity: Identity
    active: int = 0
    open_flags: int = 0
    noisy: int = 0           # active faces with an open noisy flag in the latest published round

    @property
    def noise(self) -> float | None:
        """The noise estimate: the share of its active faces that the latest round flags noisy
        and nobody has decided yet (hard flags are kept by default, so they do not count)."""
        return self.noisy / self.active if self.active else None

    @property
    def noise_percent(self) -> float | None:
        return 100.0 * self.noise if self.active else None


def _table_key(dataset) -> str:
    """Per dataset and latest round (its id and status): a round that publishes shows its flags
    at once. Decisions do not change the key: counting costs ~1 s at 1M faces, too much to redo
    after every decision, so the counts may lag them by up to TABLE_CACHE_SECONDS."""
    latest = Round.objects.filter(dataset_id=dataset.pk).order_by("-number").values_list("pk", "status").first()
    latest = "-".join(map(str, latest)) if latest else "none"
    return f"faceclean:identity-table:v1:{dataset.pk}:{dataset.created_at.timestamp()}:{latest}"


def _compute_table(dataset_id: int, ids: list[int] | None = None) -> dict:
    """{identity id: (merged_into id, active faces, open flags, noisy faces)} for every identity
    of the dataset (one GROUP BY over its active faces and two over the latest round's open
    flags), or for the identities `ids` only (their face_identity and flag rows)."""
    identities = Identity.objects.filter(dataset_id=dataset_id)
    faces = Face.objects.filter(dataset_id=dataset_id, status=Face.Status.ACTIVE)
    if ids is not None:
        identities, faces = identities.filter(pk__in=ids), faces.filter(identity_id__in=ids)
    table = {pk: [merged, 0, 0, 0] for pk, merged in identities.values_list("pk", "merged_into_id")}
    for identity_id, n in faces.order_by().values_list("identity_id").annotate(n=Count("pk")):
        table[identity_id][1] = n
    round_ = latest_published_round(dataset_id=dataset_id)
    if round_ is not None:
        open_flags = Flag.objects.filter(round=round_, state=Flag.State.OPEN).order_by()
        per_face = open_flags.filter(face__status=Face.Status.ACTIVE)
        pairs = open_flags.filter(face__isnull=True)
        if ids is not None:
            per_face = per_face.filter(face__identity_id__in=ids)
            pairs = pairs.filter(Q(identity_a_id__in=ids) | Q(identity_b_id__in=ids))
        per_face = per_face.values_list("face__identity_id").annotate(
            n=Count("pk"), noisy=Count("face_id", distinct=True, filter=Q(kind=Flag.Kind.NOISY)))
        for identity_id, n, noisy in per_face:
            table[identity_id][2] += n
            table[identity_id][3] += noisy
        for a, b in pairs.values_list("identity_a_id", "identity_b_id"):
            for pk in (a, b):
                if pk in table:
                    table[pk][2] += 1
    return {pk: tuple(row) for pk, row in table.items()}


def _sort_key(sort: str):
    if sort == "size":
        return lambda item: (-item[1][1], item[0])
    if sort == "flags":
        return lambda item: (-item[1][2], -item[1][1], item[0])
    return lambda item: (-(item[1][3] / item[1][1] if item[1][1] else 0.0), -item[1][3], item[0])


def identity_table(*, dataset, sort: str) -> tuple[dict, list[int]]:
    """The per-identity counts and the identity ids in `sort` order, cached per dataset for
    TABLE_CACHE_SECONDS (and until a round changes): sorting 50K identities by size must not
    count 1M faces on every page view. Selectors never write the database; the cache is not it."""
    key = f"{_table_key(dataset)}:{sort}"
    cached = cache.get(key)
    if cached is None:
        table = _compute_table(dataset.pk)
        order = [pk for pk, _ in sorted(table.items(), key=_sort_key(sort))]
        cached = (table, order)
        cache.set(key, cached, TABLE_CACHE_SECONDS)
    return cached


def _rows(ids: list[int], table: dict, merged: bool) -> list[IdentityRow]:
    found = Identity.objects.select_related("merged_into").in_bulk(ids)
    out = []
    for pk in ids:
        # The cached table may predate a merge: the row read now decides.
        if pk in found and (merged or found[pk].merged_into_id is None):
            _, active, open_flags, noisy = table.get(pk, (None, 0, 0, 0))
            out.append(IdentityRow(found[pk], active, open_flags, noisy))
    return out


def identity_list(*, dataset, q: str = "", sort: str = "name", after: int | None = None,
                  merged: bool = False, limit: int = IDENTITY_PAGE) -> dict:
    """One page of the dataset's identities, keyset-paged after the identity id `after` (no
    OFFSET, no COUNT): by name through identity_dataset_name, or by size, open flags or noise
    estimate through the cached per-dataset table. `q` keeps names containing it (any case);
    merged-away identities are left out unless `merged`."""
    q = q.strip()
    sort = sort if sort in IDENTITY_SORTS else "name"
    table, order = identity_table(dataset=dataset, sort=sort) if sort != "name" else ({}, [])
    if sort == "name":
        rows = Identity.objects.filter(dataset_id=dataset.pk)
        if not merged:
            rows = rows.filter(merged_into__isnull=True)
        if q:
            # ILIKE '%q%' cannot use the btree index (no pg_trgm without a migration): it filters
            # the dataset's identities as the name-ordered index walk meets them, stopping at a page.
            rows = rows.filter(name__icontains=q)
        if after is not None:
            last = Identity.objects.filter(pk=after, dataset_id=dataset.pk).values_list("name", flat=True).first()
            if last is not None:
                rows = rows.filter(Q(name__gt=last) | Q(name=last, pk__gt=after))
        ids = list(rows.order_by("name", "pk").values_list("pk", flat=True)[:limit + 1])
        table = _compute_table(dataset.pk, ids[:limit])  # the page's own counts, current
    else:
        wanted = set(Identity.objects.filter(dataset_id=dataset.pk, name__icontains=q)
                     .values_list("pk", flat=True)) if q else None
        start = order.index(after) + 1 if after is not None and after in table else 0
        ids = []
        for pk in order[start:]:
            if (merged or table[pk][0] is None) and (wanted is None or pk in wanted):
                ids.append(pk)
                if len(ids) > limit:
                    break
    next_after = ids[limit - 1] if len(ids) > limit else None
    return {"rows": _rows(ids[:limit], table, merged), "next_after": next_after, "q": q, "sort": sort, "merged": merged,
            "sorts": IDENTITY_SORTS}


def face_find(*, dataset_id: int, q: str, limit: int = FIND_LIMIT) -> list[Face]:
    """Faces of the dataset by id ("123" or "#123"), else by path: exact, else paths starting
    with q (a range scan of face_unique_path per source), else paths ending with it (a scan of
    the dataset's faces, stopped at `limit` matches). An absolute path under a source's folder
    is read relative to it."""
    q = q.strip()
    if not q:
        return []
    faces = Face.objects.select_related("identity").order_by("source_id", "path")
    digits = q[1:] if q.startswith("#") else q
    if digits.isascii() and digits.isdigit() and len(digits) < 19:
        found = list(faces.filter(dataset_id=dataset_id, pk=int(digits)))
        if found:
            return found
    sources = list(Source.objects.filter(dataset_id=dataset_id).values_list("pk", "root"))
    relative = {pk: q[len(root.rstrip("/")) + 1:] if root and q.startswith(root.rstrip("/") + "/") else q
                for pk, root in sources}
    exact = Q()
    for pk, path in relative.items():
        exact |= Q(source_id=pk, path=path)
    found = list(faces.filter(exact)[:limit]) if sources else []
    if found:
        return found
    prefix = Q()
    for pk, path in relative.items():
        prefix |= Q(source_id=pk, path__gte=path, path__lt=path + "\U0010ffff", path__startswith=path)
    found = list(faces.filter(prefix)[:limit]) if sources else []
    if found:
        return found
    # No index serves a suffix (no pg_trgm without a migration): a scan, ~0.2 s per 1M faces.
    return list(Face.objects.select_related("identity").filter(dataset_id=dataset_id, path__endswith=q)
                .order_by()[:limit])
