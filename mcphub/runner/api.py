"""The runner's HTTP surface, OpenAI-compatible: `POST /v1/chat/completions` and `GET /v1/models`.

`runner_routes(hub)` gives `create_app` its routes; without a `runner:` section (read per request, so a
reload can add one) both answer 404 naming it. Both need a credential once any is configured, and the
chat's tool calls run with that caller's scopes. `stream: true` answers with SSE in OpenAI's chunk
format; the response starts when the first piece of the answer is ready (tool steps run before it), so a
backend that is down or slow is still a plain 502/504 in the hub's error shape. A failure after the
stream has started is sent as a `data: {"error": ...}` event, then `[DONE]`. A client that hangs up
cancels the chat, streamed or not.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import httpx2
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from mcphub.auth import Principal
from mcphub.config import RunnerConfig
from mcphub.errors import ArgumentError, HubError, InvalidArguments, NotFound
from mcphub.invoker import Invoker
from mcphub.runner.backends import ModelBackend, OllamaBackend, OnText, OpenAIBackend
from mcphub.runner.loop import ChatResult, Runner
from mcphub.runner.messages import ChatRequest, Sampling
from mcphub.runner.tools import HubTools, ToolCaller

logger = logging.getLogger(__name__)


def make_backend(config: RunnerConfig, client: httpx2.AsyncClient) -> ModelBackend:
    if config.backend == "ollama":
        return OllamaBackend(client, config.base_url, num_ctx=config.num_ctx, api_key=config.api_key)
    return OpenAIBackend(client, config.base_url, api_key=config.api_key)


def make_runner(config: RunnerConfig, tools: ToolCaller, client: httpx2.AsyncClient, *,
                model: str | None = None, options: Sampling | None = None) -> Runner:
    return Runner(make_backend(config, client), tools, model=model or config.model, max_steps=config.max_steps,
                  max_result_chars=config.max_result_chars, options=options)


def backend_client(config: RunnerConfig, transport: httpx2.AsyncBaseTransport | None = None) -> httpx2.AsyncClient:
    """`timeout`: seconds to connect, and at most between two bytes of the backend's answer. `transport`:
    how requests reach the backend (default: the network; tests pass a mock or an ASGI transport)."""
    return httpx2.AsyncClient(timeout=httpx2.Timeout(config.timeout), transport=transport)


def runner_routes(invoker: Invoker, *, backend_transport: httpx2.AsyncBaseTransport | None = None) -> list[Route]:
    """Routes over `invoker`: its config and authenticator (replaced on reload), and its call path for
    the chat's tool calls (through `HubTools`). `backend_transport`: see `backend_client`."""

    async def setup(request: Request) -> tuple[Principal, RunnerConfig]:
        config = invoker.config.runner  # read per request: a reload may add or remove it
        if config is None:
            raise NotFound(f"no model runner here: {request.url.path} needs a runner: section in the hub's config "
                           '(`runner: {}` alone uses Ollama at 127.0.0.1:11434; see README, section "runner")')
        principal = await invoker.auth.require_async(request.headers.get("authorization"), request.headers)
        return principal, config

    async def models(request: Request) -> Response:
        try:
            _, config = await setup(request)
        except HubError as exc:
            return _error(exc)
        return JSONResponse({"object": "list", "data": [
            {"id": config.model, "object": "model", "created": 0, "owned_by": "mcphub"},
        ]})

    async def completions(request: Request) -> Response:
        try:
            principal, config = await setup(request)
            chat = _chat_request(await request.body())
        except HubError as exc:
            return _error(exc)
        model = chat.model or config.model
        tools = HubTools(invoker, principal, config.servers, authorization=request.headers.get("authorization"))

        async def run(on_text: OnText | None) -> ChatResult:
            async with backend_client(config, backend_transport) as client:
                runner = make_runner(config, tools, client, model=model, options=chat.sampling())
                return await runner.chat(chat.messages, on_text=on_text)

        meta = _Meta(model)
        return _ChatStream(run, meta) if chat.stream else _ChatAnswer(run, meta)

    return [
        Route("/v1/models", models, methods=["GET"]),
        Route("/v1/chat/completions", completions, methods=["POST"]),
    ]


def _chat_request(raw: bytes) -> ChatRequest:
    try:
        return ChatRequest.model_validate_json(raw or b"{}")
    except ValidationError as exc:
        errors: list[ArgumentError] = [{"loc": ["body", *e["loc"]], "msg": e["msg"]}
                                       for e in exc.errors(include_url=False)[:20]]
        where = ".".join(map(str, errors[0]["loc"][1:])) or "body"
        raise InvalidArguments(f"not a chat completion request: {where}: {errors[0]['msg']}", errors) from None


def _error(exc: HubError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status_code, headers=exc.headers())


class _Meta:
    """What every answer of one request shares: id, creation time, model."""

    def __init__(self, model: str) -> None:
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.model = model

    def completion(self, result: ChatResult) -> dict[str, Any]:
        return {
            "id": self.id, "object": "chat.completion", "created": self.created, "model": self.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": result.answer},
                         "finish_reason": "stop"}],
            "usage": _usage(result),
            "mcphub": _trace(result),
        }

    def chunk(self, delta: dict[str, Any], finish_reason: str | None = None, **extra: Any) -> bytes:
        body = {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}], **extra}
        return _event(body)


def _usage(result: ChatResult) -> dict[str, int]:
    prompt, completion = result.usage.get("prompt_tokens", 0), result.usage.get("completion_tokens", 0)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _trace(result: ChatResult) -> dict[str, Any]:
    """An extension field (clients ignore it): what the runner did to reach the answer."""
    return {
        "stop_reason": result.stop_reason,
        "model_requests": result.model_requests,
        "tool_calls": [{"name": s.call.name, "arguments": s.call.arguments, "ok": s.ok, "result": s.text}
                       for s in result.steps],
    }


def _event(body: Any) -> bytes:
    return f"data: {json.dumps(body, ensure_ascii=False)}\n\n".encode()


async def _until_disconnect(receive: Receive, scope_to_cancel: anyio.CancelScope) -> None:
    """Cancel the chat (its backend request, its tool calls) when the client hangs up."""
    while (await receive())["type"] != "http.disconnect":
        pass
    scope_to_cancel.cancel()


class _ChatAnswer(Response):
    """The whole answer as one JSON body; like _ChatStream it owns the chat's task, so a client that
    hangs up before the answer is ready cancels the chat instead of leaving it to run to the end."""

    media_type = "application/json"

    def __init__(self, run: Callable[[OnText | None], Awaitable[ChatResult]], meta: _Meta) -> None:
        super().__init__(status_code=200)
        self._run = run
        self._meta = meta

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response: Response | None = None
        async with anyio.create_task_group() as tg:
            tg.start_soon(_until_disconnect, receive, tg.cancel_scope)
            try:
                response = JSONResponse(self._meta.completion(await self._run(None)))
            except HubError as exc:
                response = _error(exc)
            except Exception:
                logger.exception("runner: chat failed")
                response = _error(HubError("internal error in the model runner (see the hub's log)"))
            tg.cancel_scope.cancel()
        if response is not None:  # None: the client hung up and the chat was cancelled
            await response(scope, receive, send)


class _ChatStream(Response):
    """SSE answer that owns the chat's task: status and headers wait for the first piece of the answer
    (or the error), the client hanging up cancels the chat."""

    media_type = "text/event-stream"

    def __init__(self, run: Callable[[OnText | None], Awaitable[ChatResult]], meta: _Meta) -> None:
        super().__init__(status_code=200)
        self._run = run
        self._meta = meta

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        events_in, events_out = anyio.create_memory_object_stream[tuple[str, Any]](64)

        async def produce() -> None:
            async with events_in:
                try:
                    result = await self._run(lambda text: events_in.send(("text", text)))
                except HubError as exc:
                    await events_in.send(("error", exc))
                except Exception:
                    logger.exception("runner: chat failed")
                    await events_in.send(("error", HubError("internal error in the model runner (see the hub's log)")))
                else:
                    await events_in.send(("done", result))

        async with anyio.create_task_group() as tg:
            tg.start_soon(produce)
            tg.start_soon(_until_disconnect, receive, tg.cancel_scope)
            async with events_out:
                await self._relay(events_out, send)
            tg.cancel_scope.cancel()

    async def _relay(self, events: Any, send: Send) -> None:
        meta, started = self._meta, False
        async for kind, value in events:
            if not started:
                if kind == "error":
                    response = _error(value)
                    await send({"type": "http.response.start", "status": response.status_code,
                                "headers": response.raw_headers})
                    await send({"type": "http.response.body", "body": response.body})
                    return
                await send({"type": "http.response.start", "status": 200, "headers": [
                    (b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache"),
                    (b"x-accel-buffering", b"no"),  # nginx: pass events on as they come
                ]})
                await self._body(send, meta.chunk({"role": "assistant", "content": ""}))
                started = True
            if kind == "text":
                await self._body(send, meta.chunk({"content": value}))
            elif kind == "error":
                await self._body(send, _event(value.body()))
                break
            else:
                await self._body(send, meta.chunk({}, "stop", usage=_usage(value), mcphub=_trace(value)))
                break
        if started:
            await send({"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": False})

    @staticmethod
    async def _body(send: Send, data: bytes) -> None:
        await send({"type": "http.response.body", "body": data, "more_body": True})
