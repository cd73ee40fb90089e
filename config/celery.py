"""The Celery app. Broker and schedule come from Django settings (`CELERY_*`)."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("billing")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# Heartbeats of workers and beat, read by /healthz (config/heartbeat.py).
from celery.signals import beat_init, worker_ready  # noqa: E402

from config import heartbeat  # noqa: E402

worker_ready.connect(heartbeat.on_worker_ready, weak=False)
beat_init.connect(heartbeat.on_beat_init, weak=False)
