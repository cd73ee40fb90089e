import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_a_celery_worker_process_knows_the_stripe_event_task() -> None:
    # A fresh process, as a worker starts: Django set up, then Celery's task discovery.
    script = (
        "import django; django.setup();"
        "from config.celery import app; app.loader.import_default_modules();"
        "print('credits.payments.stripe_event_process' in app.tasks)"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={"DJANGO_SETTINGS_MODULE": "config.test_settings", "PATH": "/usr/bin:/bin"},
        timeout=60,
        check=False,
    )
    assert result.stdout.strip() == "True", result.stderr
