"""What a message names outlives the module that defines its task. Messages published by an image
with other module paths (before `app/` was grouped into packages, `app/worker/tasks.py`) are still
on the
queues when a new image's workers start: each task keeps the name it had, its queue, and its
schedule; and the processes' entry points find the same Celery app."""

import importlib

from celery.app.utils import find_app

from app.worker.celery import JOBS_QUEUE, MAINTENANCE_QUEUE, celery_app

# Written out, not read from the code: the names a message in flight carries.
TASK_QUEUES = {
    "app.tasks.process_data": "celery",
    "app.tasks.send_notification": "celery",
    "app.tasks.requeue_stale_jobs": "maintenance",
    "app.tasks.purge_finished_jobs": "maintenance",
}


def test_tasks_keep_their_names_and_queues() -> None:
    for module in celery_app.conf.include:
        importlib.import_module(module)
    ours = {name: task for name, task in celery_app.tasks.items() if not name.startswith("celery.")}
    assert set(ours) == set(TASK_QUEUES)
    # `include` names the module the tasks are defined in: a worker imports them at start.
    assert {task.__module__ for task in ours.values()} <= set(celery_app.conf.include)
    assert (JOBS_QUEUE, MAINTENANCE_QUEUE) == ("celery", "maintenance")
    assert {queue.name for queue in celery_app.conf.task_queues} == set(TASK_QUEUES.values())
    for name, queue in TASK_QUEUES.items():
        assert celery_app.amqp.router.route({}, name)["queue"].name == queue, name
    assert {entry["task"] for entry in celery_app.conf.beat_schedule.values()} == {
        "app.tasks.requeue_stale_jobs",
        "app.tasks.purge_finished_jobs",
    }


def test_entry_points_find_the_celery_app() -> None:
    # `celery -A app.worker worker|beat` and `celery -A app.monitoring flower`, as infra/ runs them.
    assert find_app("app.worker") is celery_app
    assert find_app("app.monitoring") is celery_app
    # kombu loads the transport by this string when the worker connects.
    transport = celery_app.conf.broker_transport
    module, _, name = transport.partition(":")
    assert hasattr(importlib.import_module(module), name), transport
