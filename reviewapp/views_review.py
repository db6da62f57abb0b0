"""Review queues, face cards and flag decisions."""
from django.http import HttpResponse


def _todo(request, **kwargs):
    return HttpResponse("Not built yet", status=501)


review_queue = _todo
review_claim = _todo
flags_bulk = _todo
flag_card = _todo
flag_decide = _todo
