"""POST /notifications: dispatch `send_notification`, through the outbox (app/intake/outbox.py)."""

import json
import uuid

from fastapi import APIRouter, Depends, HTTPException, Request, Response, status

from app.api.clients import CallerDep
from app.api.routes.process_item import REPLAYED_HEADER
from app.api.schemas import NotificationIn, TaskAccepted
from app.api.strict_json import StrictJsonRoute
from app.intake import idempotency
from app.intake.idempotency import IdempotencyKeyHeader, IdempotencyKeyReused
from app.intake.outbox import OutboxBatch, get_outbox
from app.storage import pg
from app.tracing import current_traceparent
from app.worker.tasks import send_notification

# Strict JSON: NaN, Infinity or 1e400 anywhere in the body is a 422 (app/api/strict_json.py).
router = APIRouter(tags=["notifications"], route_class=StrictJsonRoute)

# The notification's message in the outbox, with its traceparent; with a key ($4, $5), only if
# the key is new to its client ($7).
INSERT_NOTIFICATION = """
INSERT INTO outbox (task_name, task_ids, args, traceparents)
VALUES ($1, ARRAY[$2::uuid], $3::jsonb, ARRAY[$4::text]) RETURNING id
"""
INSERT_KEYED_NOTIFICATION = """
WITH claimed AS (
    INSERT INTO idempotency_keys (client_id, key, fingerprint, task_id) VALUES ($7, $4, $5, $2)
    ON CONFLICT (client_id, key) DO NOTHING
    RETURNING task_id
)
INSERT INTO outbox (task_name, task_ids, args, traceparents)
SELECT $1, ARRAY[$2::uuid], $3::jsonb, ARRAY[$6::text] FROM claimed
RETURNING id
"""


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
        422: {
            "description": "A malformed body or Idempotency-Key, or a key already used with "
            "another body."
        },
        503: {"description": "PostgreSQL did not take it: nothing recorded; see Retry-After."},
    },
)
async def notify(
    notification: NotificationIn,
    response: Response,
    client: CallerDep,
    idempotency_key: IdempotencyKeyHeader = None,
) -> TaskAccepted:
    """Queue a notification (fire and forget: its progress shows in Flower, not in GET /task).

    Recorded in the outbox before the 202; the broker gets it afterwards, whatever it is doing.
    """
    task_id = uuid.uuid4()
    args = [notification.user_id, notification.message]
    statement = [send_notification.name, task_id, json.dumps([args])]
    traceparent = current_traceparent()  # the request's trace, carried by the message
    async with pg.connection() as connection:
        if idempotency_key is None:
            outbox_id = await connection.fetchval(INSERT_NOTIFICATION, *statement, traceparent)
        else:
            body = json.dumps(notification.model_dump(), sort_keys=True).encode()
            fingerprint = idempotency.fingerprint("POST", "/notifications", body)
            outbox_id = await connection.fetchval(
                INSERT_KEYED_NOTIFICATION,
                *statement,
                idempotency_key,
                fingerprint,
                traceparent,
                client,
            )
            if outbox_id is None:  # the key was recorded by an earlier request
                scoped_key = (client, idempotency_key)
                records = await idempotency.recorded(connection, [scoped_key])
                try:
                    first = idempotency.replay(
                        idempotency_key, fingerprint, records.get(scoped_key)
                    )
                except IdempotencyKeyReused as error:
                    raise HTTPException(
                        status.HTTP_422_UNPROCESSABLE_CONTENT, detail=str(error)
                    ) from error
                response.headers[REPLAYED_HEADER] = "true"
                return TaskAccepted(task_id=str(first))
    get_outbox().publish_soon(
        OutboxBatch(outbox_id, send_notification.name, [task_id], [args], [traceparent])
    )
    return TaskAccepted(task_id=str(task_id))
