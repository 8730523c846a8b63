"""POST /notifications: dispatch `send_notification`."""

from fastapi import APIRouter, HTTPException, status
from starlette.concurrency import run_in_threadpool

from app.schemas import NotificationIn, TaskAccepted
from app.tasks import send_notification

router = APIRouter(tags=["notifications"])


def _publish(notification: NotificationIn) -> str:
    message = send_notification.apply_async(
        args=[notification.user_id, notification.message], ignore_result=True
    )
    return str(message.id)


@router.post(
    "/notifications",
    status_code=status.HTTP_202_ACCEPTED,
    responses={503: {"description": "The broker did not take the message."}},
)
async def notify(notification: NotificationIn) -> TaskAccepted:
    """Queue a notification (fire and forget: its progress shows in Flower, not in GET /task)."""
    try:
        task_id = await run_in_threadpool(_publish, notification)
    except Exception as error:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, detail="broker unavailable"
        ) from error
    return TaskAccepted(task_id=task_id)
