"""Request bodies as strict JSON: a non-finite number anywhere in a body is a 422.

Python's `json.loads` (which FastAPI uses) accepts `NaN`, `Infinity` and `-Infinity`, none of which
is JSON (RFC 8259, section 6), and turns a number too large for a float (`1e400`) into infinity.
Such a value then reaches validation, and the 422 answer, which echoes the input, could not even be
encoded (`Out of range float values are not JSON compliant`): a 500. Here the body is refused while
it is parsed, as a JSON error naming the value, before any field sees it.
"""

import json
import math
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute


def _refuse(text: str, doc: str) -> None:
    raise json.JSONDecodeError(f"non-finite number {text} is not allowed", doc, doc.find(text))


def loads(body: bytes | str) -> Any:
    """`json.loads` that refuses NaN, Infinity, -Infinity and numbers beyond a float's range."""
    doc = body.decode() if isinstance(body, bytes) else body

    def constant(text: str) -> Any:  # called for NaN, Infinity, -Infinity only
        _refuse(text, doc)

    def number(text: str) -> float:
        value = float(text)
        if not math.isfinite(value):
            _refuse(text, doc)
        return value

    return json.loads(doc, parse_constant=constant, parse_float=number)


class StrictJsonRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = loads(await self.body())
        return self._json


class StrictJsonRoute(APIRoute):
    """A route whose body is parsed by `loads` (FastAPI answers its JSONDecodeError with 422)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict(request: Request) -> Response:
            return await handler(StrictJsonRequest(request.scope, request.receive))

        return strict


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


async def validation_error(_: Request, error: Exception) -> JSONResponse:
    """FastAPI's own 422, with any non-finite input shown as text: it can always be encoded."""
    assert isinstance(error, RequestValidationError)
    return JSONResponse({"detail": _finite(jsonable_encoder(error.errors()))}, status_code=422)
