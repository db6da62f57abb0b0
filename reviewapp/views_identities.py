"""Identity pages, duplicate-identity pairs, relabel search, history and undo."""
from django.http import HttpResponse


def _todo(request, **kwargs):
    return HttpResponse("Not built yet", status=501)


identity_search = _todo
history = _todo
identity_detail = _todo
identity_bulk = _todo
identity_merge = _todo
pair_detail = _todo
decision_undo = _todo
