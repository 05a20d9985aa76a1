"""Requests whose bytes do not decode are the caller's error, not ours.

Left to grpc, a corrupt message becomes UNKNOWN with the exception class and message type in
its details, and a traceback in the log for every such request: internals to the caller and
an unauthenticated way to flood the logs. This interceptor decodes tolerantly and answers
INVALID_ARGUMENT (with the usual rich details) instead, logging at most one warning per
`LOG_EVERY_S`.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc
import structlog
from google.protobuf.message import DecodeError

from common.errors import FieldViolation, ValidationError
from common.grpc.errors import abort_with, request_id_of
from common.grpc.metrics import record_served

log = structlog.get_logger(__name__)

LOG_EVERY_S = 60.0
Context = grpc.aio.ServicerContext[Any, Any]
if TYPE_CHECKING:
    Handler = grpc.RpcMethodHandler[Any, Any] | None


class _Undecodable:
    """Stands in for a request that did not decode."""


UNDECODABLE = _Undecodable()


class DecodeGuardInterceptor(grpc.aio.ServerInterceptor):
    """The outermost layer. The handler it builds for a method is built once and kept: the
    layers under it (the error mapping, whose per-call part is its `intercept`, and the
    registered servicers) answer every call of a method with the same handler, and building
    it again (two layers' wrappers, closures and handler tuples) cost every call ~10 us."""

    def __init__(self) -> None:
        self._last_logged = 0.0
        self._unlogged = 0
        self._handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler:
        method = handler_call_details.method
        guarded = self._handlers.get(method)
        if guarded is not None:
            return guarded
        handler = await continuation(handler_call_details)
        if handler is None:  # not ours to remember: an unknown method, asked again, stays so
            return None
        guarded = self._guard(handler, method)
        self._handlers[method] = guarded
        return guarded

    def _guard(
        self, handler: grpc.RpcMethodHandler[Any, Any], method: str
    ) -> grpc.RpcMethodHandler[Any, Any]:
        if handler.request_deserializer is None:
            return handler
        tolerant = self._tolerant(handler.request_deserializer, method)
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._guard_unary(handler.unary_unary, method),
                request_deserializer=tolerant,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._guard_stream(handler.unary_stream, method),
                request_deserializer=tolerant,
                response_serializer=handler.response_serializer,
            )
        return handler  # client-streaming methods: none in our contracts

    def _tolerant(self, decode: Callable[[bytes], Any], method: str) -> Callable[[bytes], Any]:
        def tolerant(raw: bytes) -> Any:
            try:
                return decode(raw)
            except DecodeError:
                self._note(method)
                return UNDECODABLE

        return tolerant

    def _note(self, method: str) -> None:
        self._unlogged += 1
        now = time.monotonic()
        if now - self._last_logged >= LOG_EVERY_S:
            log.warning("rpc.undecodable_requests", method=method, count=self._unlogged)
            self._last_logged, self._unlogged = now, 0

    @staticmethod
    def _guard_unary(behavior: Callable[..., Any], method: str) -> Callable[..., Awaitable[Any]]:
        async def guarded(request: Any, context: Context) -> Any:
            if request is UNDECODABLE:
                await _reject(context, method)
            return await behavior(request, context)

        return guarded

    @staticmethod
    def _guard_stream(
        behavior: Callable[..., Any], method: str
    ) -> Callable[..., AsyncIterator[Any]]:
        async def guarded(request: Any, context: Context) -> AsyncIterator[Any]:
            if request is UNDECODABLE:
                await _reject(context, method)
            responses = behavior(request, context)
            if inspect.isawaitable(responses):
                responses = await responses
            async for response in responses:
                yield response

        return guarded


async def _reject(context: Context, method: str) -> None:
    # Answered before the error mapping runs, so counted here.
    record_served(method, "INVALID_ARGUMENT", time.perf_counter())
    error = ValidationError(FieldViolation("request", "is not a valid message of this method"))
    await abort_with(error, context, request_id_of(context))
