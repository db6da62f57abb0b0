"""The Celery app. Broker from CELERY_BROKER_URL (Redis in production); the embedded
default is kombu's filesystem transport, which needs no server (see settings)."""
import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("faceclean")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
