"""The worker side: the Celery app (`celery.py`), its tasks (`tasks.py`) and worker liveness
(`liveness.py`). Worker and beat start from here, `celery -A app.worker worker|beat`: Celery finds
the app in this package's `celery` module, which is where it is defined."""

from app.worker.celery import celery_app

__all__ = ["celery_app"]
