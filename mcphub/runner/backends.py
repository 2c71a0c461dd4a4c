"""Model backends: one request to a chat model, its reply as a `ModelReply`.

Two wire formats: any OpenAI-compatible API (`{base_url}/chat/completions`, base_url includes `/v1`: vLLM,
one-api/new-api, LM Studio, llama.cpp) and Ollama's native `/api/chat` (its OpenAI-compatible path
ignores `num_ctx` and silently truncates long tool definitions). Each backend gets its `httpx2.AsyncClient`
from the caller, so a test can point it anywhere and nothing here owns a connection pool.

With `on_text`, the backend streams and hands each piece of content to `on_text` as it arrives; the
assembled reply is returned either way. Quirks handled here, at the wire: streamed tool-call deltas that
all say `index: 0` for different calls (a new id, or a new name after complete arguments, starts a new
call); Ollama's `function.arguments` as an object. Missing or repeated ids are fixed by the loop.

Failures: nothing listening, a non-2xx answer or a body that is not a chat reply → `BackendUnavailable`
(502); no byte within `timeout` seconds → `BackendTimeout` (504).
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import httpx2

from mcphub.errors import BadUpstreamResponse, ToolTimeout
from mcphub.runner.messages import Message, ModelReply, Sampling, ToolCall, parse_arguments, text_of

logger = logging.getLogger(__name__)

OnText = Callable[[str], Awaitable[None]]
MAX_ERROR_CHARS = 500  # of a backend's error body, quoted in ours


class BackendUnavailable(BadUpstreamResponse):
    """The model backend could not be reached or did not answer with a chat reply (502 bad_gateway)."""


class BackendTimeout(ToolTimeout):
    """The model backend did not answer in time (504 timeout)."""


class ModelBackend(Protocol):
    async def chat(
        self,
        messages: list[Message],
        tools: list[dict[str, Any]] | None,
        *,
        model: str,
        options: Sampling | None = None,
        on_text: OnText | None = None,
    ) -> ModelReply: ...


class OpenAIBackend:
    """`POST {base_url}/chat/completions`, streamed as SSE when `on_text` is given."""

    def __init__(self, client: httpx2.AsyncClient, base_url: str, *, api_key: str | None = None) -> None:
        self._client = client
        self._url = base_url.rstrip("/") + "/chat/completions"
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}

    async def chat(
        self,
        messages: list[Message],
        tools: list[dict[str, Any]] | None,
        *,
        model: str,
        options: Sampling | None = None,
        on_text: OnText | None = None,
    ) -> ModelReply:
        body: dict[str, Any] = {"model": model, "messages": [_openai_message(m) for m in messages]}
        if tools:
            body["tools"] = tools
        body.update(options or {})
        body["stream"] = on_text is not None
        async with _request(self._client, self._url, body, self._headers) as response:
            if on_text is None:
                return _openai_reply(await _json(response, self._url))
            return await _openai_stream(response, self._url, on_text)


class OllamaBackend:
    """`POST {base_url}/api/chat`, streamed as NDJSON when `on_text` is given."""

    def __init__(self, client: httpx2.AsyncClient, base_url: str, *, num_ctx: int | None = None,
                 api_key: str | None = None) -> None:
        self._client = client
        self._url = base_url.rstrip("/") + "/api/chat"
        self._num_ctx = num_ctx
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}

    async def chat(
        self,
        messages: list[Message],
        tools: list[dict[str, Any]] | None,
        *,
        model: str,
        options: Sampling | None = None,
        on_text: OnText | None = None,
    ) -> ModelReply:
        body: dict[str, Any] = {"model": model, "messages": [_ollama_message(m) for m in messages],
                                "stream": on_text is not None}
        if tools:
            body["tools"] = tools
        ollama_options = _ollama_options(options or {})
        if self._num_ctx:
            ollama_options["num_ctx"] = self._num_ctx
        if ollama_options:
            body["options"] = ollama_options
        async with _request(self._client, self._url, body, self._headers) as response:
            if on_text is None:
                return _ollama_reply([await _json(response, self._url)], self._url)
            chunks: list[object] = []
            async for line in _lines(response, self._url):
                chunk = _decode(line, self._url)
                chunks.append(chunk)
                piece = (chunk.get("message") or {}).get("content") if isinstance(chunk, dict) else None
                if piece:
                    await on_text(piece)
            return _ollama_reply(chunks, self._url)


# ------------------------------------------------------------------------------------------ transport


@asynccontextmanager
async def _request(client: httpx2.AsyncClient, url: str, body: dict[str, Any],
                   headers: dict[str, str]) -> AsyncIterator[httpx2.Response]:
    """POST and yield the (streaming) response once it is 2xx; map every transport failure."""
    try:
        async with client.stream("POST", url, json=body, headers=headers) as response:
            if response.status_code >= 400:
                detail = (await response.aread()).decode("utf-8", "replace")
                raise BackendUnavailable(
                    f"model backend {url} answered {response.status_code}: {_error_detail(detail)}")
            yield response
    except httpx2.TimeoutException:
        raise BackendTimeout(f"model backend {url} did not answer in time (runner.timeout)") from None
    except httpx2.ConnectError as exc:
        raise BackendUnavailable(f"model backend {url} is unreachable: {exc or 'connection failed'}") from None
    except httpx2.TransportError as exc:
        raise BackendUnavailable(f"model backend {url} failed: {type(exc).__name__}: {exc}") from None


# Decoded JSON is `Any`, as json.loads gives it: the readers below take it apart defensively (a wrong
# shape is a BackendUnavailable), which is what a type for every reply shape of every server would not add.


async def _json(response: httpx2.Response, url: str) -> Any:
    return _decode((await response.aread()).decode("utf-8", "replace"), url)


async def _lines(response: httpx2.Response, url: str) -> AsyncIterator[str]:
    async for line in response.aiter_lines():
        if line.strip():
            yield line


def _decode(text: str, url: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        raise BackendUnavailable(f"model backend {url} answered something that is not JSON: {text[:200]!r}") from None


def _error_detail(text: str) -> str:
    try:
        data = json.loads(text)
    except ValueError:
        return text.strip()[:MAX_ERROR_CHARS] or "(empty body)"
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict):
        error = error.get("message") or error
    return str(error or data)[:MAX_ERROR_CHARS]


# ---------------------------------------------------------------------------------- OpenAI format


def _openai_message(message: Message) -> Message:
    if message.get("role") == "tool":  # `name` is ours (Ollama wants it); strict OpenAI servers reject it
        return {k: v for k, v in message.items() if k != "name"}
    return message


def _openai_reply(data: Any) -> ModelReply:
    try:
        choice = data["choices"][0]
        message = choice.get("message") or {}
    except (KeyError, IndexError, TypeError):
        raise BackendUnavailable(f"model backend answered without a choice: {str(data)[:200]}") from None
    calls = [_call(tc.get("id"), (tc.get("function") or {}).get("name"), (tc.get("function") or {}).get("arguments"))
             for tc in message.get("tool_calls") or [] if isinstance(tc, dict)]
    return ModelReply(content=text_of(message.get("content")), tool_calls=calls,
                      finish_reason=choice.get("finish_reason"), usage=_usage(data.get("usage")))


@dataclass
class _PartialCall:
    """A tool call as its streamed deltas have built it so far."""

    id: str | None
    name: str
    arguments: str | dict[str, Any]  # JSON text as it arrives; an object from servers that send one


async def _openai_stream(response: httpx2.Response, url: str, on_text: OnText) -> ModelReply:
    content: list[str] = []
    calls: list[_PartialCall] = []  # in order of appearance
    latest: dict[int, int] = {}  # stream index → position in `calls` of the call it currently feeds
    finish_reason: str | None = None
    usage: dict[str, int] = {}
    async for line in _lines(response, url):
        if not line.startswith("data:"):
            continue  # comments (": keep-alive"), event: lines
        payload = line[5:].strip()
        if payload == "[DONE]":
            break
        chunk = _decode(payload, url)
        if not isinstance(chunk, dict):
            continue
        if chunk.get("error"):
            raise BackendUnavailable(f"model backend {url} failed mid-stream: {_error_detail(json.dumps(chunk))}")
        usage = _usage(chunk.get("usage")) or usage
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            piece = text_of(delta.get("content"))
            if piece:
                content.append(piece)
                await on_text(piece)
            for tc in delta.get("tool_calls") or []:
                _merge_delta(calls, latest, tc)
            finish_reason = choice.get("finish_reason") or finish_reason
    return ModelReply(content="".join(content), finish_reason=finish_reason, usage=usage,
                      tool_calls=[_call(c.id, c.name, c.arguments) for c in calls])


def _merge_delta(calls: list[_PartialCall], latest: dict[int, int], delta: dict[str, Any]) -> None:
    """Fold one streamed tool-call delta in. Some servers send every parallel call with `index: 0`: a
    delta with a new id, or a name arriving after a complete call, then starts the next call."""
    index = delta.get("index", 0)
    function = delta.get("function") or {}
    call_id, name, arguments = delta.get("id"), function.get("name"), function.get("arguments")
    current = calls[latest[index]] if index in latest else None
    starts_new = current is None or (
        (call_id and current.id and call_id != current.id)
        or (name and current.name and _complete_json(current.arguments))
    )
    if current is None or starts_new:
        latest[index] = len(calls)
        current = _PartialCall(id=call_id, name=name or "", arguments="")
        calls.append(current)
    else:
        current.id = current.id or call_id
        if name and not current.name:
            current.name = name
    if isinstance(arguments, dict):
        current.arguments = arguments
    elif arguments:
        current.arguments = (current.arguments if isinstance(current.arguments, str) else "") + arguments


def _complete_json(text: str | dict[str, Any]) -> bool:
    if isinstance(text, dict):
        return True
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


# ---------------------------------------------------------------------------------- Ollama format


def _ollama_message(message: Message) -> Message:
    out: Message = {"role": message.get("role", "user"), "content": text_of(message.get("content"))}
    content = message.get("content")
    parts = content if isinstance(content, list) else []
    images = [_data_url_payload(p) for p in parts if isinstance(p, dict) and p.get("type") == "image_url"]
    if any(images):
        out["images"] = [i for i in images if i]
    if message.get("tool_calls"):
        out["tool_calls"] = [
            {"function": {"name": (tc.get("function") or {}).get("name", ""),
                          "arguments": parse_arguments((tc.get("function") or {}).get("arguments"))[0] or {}}}
            for tc in message["tool_calls"]
        ]
    if message.get("role") == "tool" and message.get("name"):
        out["tool_name"] = message["name"]
    return out


def _data_url_payload(part: dict[str, Any]) -> str | None:
    url = (part.get("image_url") or {}).get("url", "")
    return url.split(",", 1)[1] if url.startswith("data:") and "," in url else None


def _ollama_options(options: Sampling) -> dict[str, object]:
    names = {"temperature": "temperature", "top_p": "top_p", "max_tokens": "num_predict", "seed": "seed"}
    out: dict[str, object] = {names[k]: v for k, v in options.items() if k in names}
    if "stop" in options:
        out["stop"] = [options["stop"]] if isinstance(options["stop"], str) else options["stop"]
    return out


def _ollama_reply(chunks: list[Any], url: str) -> ModelReply:
    content: list[str] = []
    calls: list[ToolCall] = []
    finish_reason: str | None = None
    usage: dict[str, int] = {}
    for chunk in chunks:
        if not isinstance(chunk, dict):
            raise BackendUnavailable(f"model backend {url} answered something that is not a chat reply")
        if chunk.get("error"):
            raise BackendUnavailable(f"model backend {url} failed: {str(chunk['error'])[:MAX_ERROR_CHARS]}")
        message = chunk.get("message") or {}
        content.append(text_of(message.get("content")))
        for tc in message.get("tool_calls") or []:
            function = tc.get("function") or {}
            calls.append(_call(tc.get("id"), function.get("name"), function.get("arguments")))
        if chunk.get("done"):
            finish_reason = chunk.get("done_reason") or "stop"
            usage = {"prompt_tokens": chunk.get("prompt_eval_count") or 0,
                     "completion_tokens": chunk.get("eval_count") or 0}
    if finish_reason is None and not any(content) and not calls:
        raise BackendUnavailable(f"model backend {url} answered without a message")
    return ModelReply(content="".join(content), tool_calls=calls, finish_reason=finish_reason, usage=usage)


# ------------------------------------------------------------------------------------------- common


def _call(call_id: object, name: object, arguments: object) -> ToolCall:
    parsed, error = parse_arguments(arguments)
    return ToolCall(id=str(call_id or ""), name=str(name or ""), arguments=parsed, error=error)


def _usage(raw: object) -> dict[str, int]:
    if not isinstance(raw, dict):
        return {}
    return {k: int(raw[k]) for k in ("prompt_tokens", "completion_tokens") if isinstance(raw.get(k), int)}
