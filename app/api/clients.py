"""Who a request is from: the id of its API key (app/api/auth.py puts it in the request's scope),
or ANONYMOUS_CLIENT while AUTH_REQUIRED is off. Jobs, Idempotency-Keys and the finished-job cache
are each client's own."""

from typing import Annotated

from fastapi import Depends, Request
from starlette.types import Scope

from app.storage.models import ANONYMOUS_CLIENT

# The scope entry naming the request's client.
CLIENT_ID = "taskstack.client_id"


def client_id_of(scope: Scope) -> int:
    client_id: int = scope.get(CLIENT_ID, ANONYMOUS_CLIENT)
    return client_id


# A coroutine: FastAPI would run a plain function in a worker thread (app/api/deps.py).
async def caller(request: Request) -> int:
    """The request's client (FastAPI dependency)."""
    return client_id_of(request.scope)


CallerDep = Annotated[int, Depends(caller)]
