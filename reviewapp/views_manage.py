"""Dataset page, rounds (start, cancel, progress, charts), background jobs and members."""
from django.http import HttpResponse


def _todo(request, **kwargs):
    return HttpResponse("Not built yet", status=501)


dataset_import = _todo
dataset_detail = _todo
dataset_members = _todo
round_start = _todo
export_start = _todo
round_detail = _todo
round_progress = _todo
round_cancel = _todo
round_chart = _todo
job_detail = _todo
job_download = _todo
