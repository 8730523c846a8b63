"""POST /notifications: dispatch `send_notification`."""

from fastapi import APIRouter, Depends, HTTPException, Request, status
from starlette.concurrency import run_in_threadpool

from app.api.strict_json import StrictJsonRoute
from app.schemas import NotificationIn, TaskAccepted
from app.tasks import send_notification

# Strict JSON: NaN, Infinity or 1e400 anywhere in the body is a 422 (app/api/strict_json.py).
router = APIRouter(tags=["notifications"], route_class=StrictJsonRoute)


def _publish(notification: NotificationIn) -> str:
    message = send_notification.apply_async(
        args=[notification.user_id, notification.message], ignore_result=True
    )
    return str(message.id)


def _require_json(request: Request) -> None:
    # Without this a form or text body is a 422 that echoes the raw body back.
    content_type = request.headers.get("content-type")
    media_type = (content_type or "").partition(";")[0].strip().lower()
    if media_type != "application/json" and not (
        media_type.startswith("application/") and media_type.endswith("+json")
    ):
        raise HTTPException(
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            detail=f"Content-Type must be application/json, got {content_type or 'none'}",
        )


@router.post(
    "/notifications",
    status_code=status.HTTP_202_ACCEPTED,
    dependencies=[Depends(_require_json)],
    responses={
        400: {"description": "The body could not be decoded (not UTF-8 JSON)."},
        413: {"description": "The body is larger than the limit (64 KiB)."},
        415: {"description": "The body is not JSON (Content-Type)."},
        503: {"description": "The broker did not take the message."},
    },
)
async def notify(notification: NotificationIn) -> TaskAccepted:
    """Queue a notification (fire and forget: its progress shows in Flower, not in GET /task)."""
    try:
        task_id = await run_in_threadpool(_publish, notification)
    except Exception as error:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            detail="broker unavailable",
            headers={"Retry-After": "1"},
        ) from error
    return TaskAccepted(task_id=task_id)
