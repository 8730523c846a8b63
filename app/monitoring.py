"""The Celery app as Flower runs it (`celery -A app.monitoring flower`): Flower's /metrics behind
the same authentication as every other page.

Flower 2.2 serves `/metrics` (task names, worker host names and counts) without checking
credentials, while `--basic-auth` guards the rest; its handler is given the same
`tornado.web.authenticated` guard the other pages use. Without `FLOWER_BASIC_AUTH` (dev) Flower's
`get_current_user` lets everyone in, /metrics included, as before.
"""

import tornado.web
from flower.views import monitor

from app.worker import celery_app

__all__ = ["celery_app"]

monitor.Metrics.get = tornado.web.authenticated(monitor.Metrics.get)
