"""Cursor pagination for every list: keyset on an indexed ordering, never OFFSET or COUNT(*)."""
from rest_framework.pagination import CursorPagination


class NewestFirst(CursorPagination):
    ordering = ("-id",)
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 200


class HighestScoreFirst(NewestFirst):
    """Flags, as the review queue shows them (the flag_queue / flag_open_queue indexes)."""

    ordering = ("-score", "-id")
