"""Celery tasks: thin wrappers that load ids and call one service."""
from celery import shared_task
from django.contrib.auth import get_user_model

from .models import Dataset
from .services.exports import dataset_export
from .services.imports import dataset_import


def _user(user_id):
    return get_user_model().objects.filter(pk=user_id).first() if user_id else None


@shared_task
def import_dataset_task(*, path: str, name: str, fmt: str, root: str | None = None, user_id: int | None = None) -> dict:
    user = _user(user_id)
    report = dataset_import(path=path, name=name, fmt=fmt, root=root, user=user,
                            actor=user.get_username() if user else "worker")
    return report.summary()


@shared_task
def export_dataset_task(*, dataset_id: int, out: str, fmt: str = "list") -> dict:
    summary = dataset_export(dataset=Dataset.objects.get(pk=dataset_id), out=out, fmt=fmt)
    return {"faces": summary.faces, "identities": summary.identities, "out": out}


# Celery's autodiscovery loads this module only: the round tasks live beside it.
from .tasks_rounds import recover_rounds_task, run_round_task  # noqa: E402,F401
