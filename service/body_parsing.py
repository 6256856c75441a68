"""JSON bodies parsed and validated off the event loop.

FastAPI parses a JSON body (``json.loads``) and validates it against the route's model on the event loop: a
body of half a million per-token offsets (3.6 MB, under the body limit) takes seconds of CPU there, and every
other request, ``/healthz`` included, waits. :class:`OffLoopBodyRoute` hands FastAPI a request whose
``json()`` does both in a worker thread and returns the validated model (FastAPI then accepts it as is); a
body the model refuses is given back as parsed, so FastAPI's own validation names the fields as usual.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response


def _parsed(body: bytes, model: type[BaseModel] | None) -> Any:
    data = json.loads(body)
    if model is None:
        return data
    try:
        return model.model_validate(data)  # as FastAPI would (Python mode), here in a worker thread
    except ValidationError:
        return data  # FastAPI validates it again and answers its 422 naming the fields


class _OffLoopJsonRequest(Request):
    body_model: type[BaseModel] | None = None

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            self._json = await asyncio.to_thread(_parsed, body, self.body_model)
        return self._json


class OffLoopBodyRoute(APIRoute):
    """An APIRoute whose JSON body is parsed and validated in a worker thread."""

    def get_route_handler(self) -> Callable[[Request], Awaitable[Response]]:
        handler = super().get_route_handler()
        params = self.dependant.body_params
        model = params[0].field_info.annotation if len(params) == 1 else None
        body_model = model if isinstance(model, type) and issubclass(model, BaseModel) else None
        request_class = type("OffLoopJsonRequest", (_OffLoopJsonRequest,), {"body_model": body_model})

        async def off_loop_handler(request: Request) -> Response:
            return await handler(request_class(request.scope, request.receive))

        return off_loop_handler
