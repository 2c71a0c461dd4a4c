"""Fake chat-model backends on 127.0.0.1: OpenAI-compatible (`POST /v1/chat/completions`, JSON or SSE)
and Ollama (`POST /api/chat`, JSON or NDJSON), playing a scripted model.

A script is a function of the messages the runner sent (and the tools it offered) to the model's next
`Turn`. Scripts compute each call's arguments from the tool results found in those messages, so a
runner that does not really feed results back cannot reach the scripted answer. Like the real APIs, the
fakes reject a transcript whose tool messages do not answer the assistant's tool calls id for id
(OpenAI) or whose tool-call arguments are not objects (Ollama), with a 400.

`quirks` make the fake misbehave the way real servers and small models do:
  stop_with_tools  finish_reason "stop" although the reply has tool calls
  no_ids           tool calls without an id
  same_ids         every tool call has the id "call_0", in every turn
  index0           (streamed) every tool-call delta says index 0, parallel calls included
  tagged           calls written as text: <tool_call>{"name": ..., "arguments": ...}</tool_call>
  fenced           calls written as text in a ```json fenced block
  think            content starts with <think>...</think> reasoning
  hang             never answer (until the client hangs up)
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

HANG_LIMIT = 60.0  # seconds a hanging fake waits for the client to give up
REASONING = "<think>The user wants a sum. I could call sample_add. <tool_call> is how.</think>\n\n"


@dataclass
class Turn:
    content: str = ""
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)


Script = Callable[[list[dict[str, Any]], list[dict[str, Any]] | None], Turn]


def tool_results(messages: list[dict[str, Any]]) -> list[Any]:
    """The content of every tool message, parsed as JSON where it is JSON, in order."""
    out = []
    for message in messages:
        if message.get("role") == "tool":
            try:
                out.append(json.loads(message["content"]))
            except ValueError:
                out.append(message["content"])
    return out


def offered(tools: list[dict[str, Any]] | None) -> list[str]:
    return [t["function"]["name"] for t in tools or []]


# ------------------------------------------------------------------------------------------ scripts


def chained_adds(messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> Turn:
    """2+3, then (that total)+10, then answer: 'The total is 15.' only if results were fed back."""
    results = tool_results(messages)
    if not results:
        return Turn("Let me add.", [("sample_add", {"a": 2, "b": 3})])
    if len(results) == 1:
        return Turn(calls=[("sample_add", {"a": results[0]["total"], "b": 10})])
    return Turn(f"The total is {results[-1]['total']}.")


def parallel_adds(messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> Turn:
    """1+2 and 10+20 in one turn, then the sum of both totals: 'The sum is 33.'"""
    results = tool_results(messages)
    if not results:
        return Turn(calls=[("sample_add", {"a": 1, "b": 2}), ("sample_add", {"a": 10, "b": 20})])
    if len(results) == 2:
        return Turn(calls=[("sample_add", {"a": results[0]["total"], "b": results[1]["total"]})])
    return Turn(f"The sum is {results[-1]['total']}.")


def calls_then_reports(*calls: tuple[str, dict[str, Any]]) -> Script:
    """Make the given calls in one turn, then answer with what each returned, verbatim."""

    def script(messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> Turn:
        results = [m["content"] for m in messages if m.get("role") == "tool"]
        if not results:
            return Turn(calls=list(calls))
        return Turn("Results: " + " | ".join(results))

    return script


def counts_forever(messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> Turn:
    """Adds 1 to the last total for as long as tools are offered; without tools, reports the total."""
    results = tool_results(messages)
    total = results[-1]["total"] if results else 0
    if tools:
        return Turn(calls=[("sample_add", {"a": total, "b": 1})])
    return Turn(f"Stopped at {total}.")


# ---------------------------------------------------------------------------------------- the fakes


class FakeLLM:
    def __init__(self, script: Script, *, quirks: Iterable[str] = (), chunk_size: int = 3) -> None:
        self.script = script
        self.quirks = set(quirks)
        self.chunk_size = chunk_size  # streamed content arrives this many characters at a time
        self.requests: list[dict[str, Any]] = []
        self._ids = 0

    # -------------------------------------------------------------------------------- OpenAI

    def openai_app(self) -> Starlette:
        return Starlette(routes=[Route("/v1/chat/completions", self._openai, methods=["POST"])])

    async def _openai(self, request: Request) -> Response:
        body = await request.json()
        self.requests.append(body)
        if "hang" in self.quirks:
            return await _hang(request)
        problem = _openai_transcript_problem(body["messages"])
        if problem:
            return JSONResponse({"error": {"message": problem, "type": "invalid_request_error"}}, status_code=400)
        turn = self._turn(body["messages"], body.get("tools"))
        content, calls = self._render(turn)
        finish = "tool_calls" if calls and "stop_with_tools" not in self.quirks else "stop"
        if not body.get("stream"):
            message: dict[str, Any] = {"role": "assistant", "content": content or None}
            if calls:
                message["tool_calls"] = [
                    {**({"id": c["id"]} if c["id"] else {}), "type": "function",
                     "function": {"name": c["name"], "arguments": json.dumps(c["arguments"])}} for c in calls
                ]
            return JSONResponse({"id": "chatcmpl-fake", "object": "chat.completion", "model": body["model"],
                                 "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                                 "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}})
        return StreamingResponse(self._openai_events(body["model"], content, calls, finish),
                                 media_type="text/event-stream")

    async def _openai_events(self, model: str, content: str, calls: list[dict[str, Any]],
                             finish: str) -> AsyncIterator[str]:
        def event(delta: dict[str, Any], finish_reason: str | None = None) -> str:
            chunk = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "model": model,
                     "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]}
            return f"data: {json.dumps(chunk)}\n\n"

        yield ": keep-alive\n\n"
        yield event({"role": "assistant", "content": ""})
        for piece in self._pieces(content):
            yield event({"content": piece})
        for i, call in enumerate(calls):
            index = 0 if "index0" in self.quirks else i
            arguments = json.dumps(call["arguments"])
            half = len(arguments) // 2
            first: dict[str, Any] = {"index": index, "type": "function",
                                     "function": {"name": call["name"], "arguments": ""}}
            if call["id"]:
                first["id"] = call["id"]
            yield event({"tool_calls": [first]})
            for part in (arguments[:half], arguments[half:]):
                yield event({"tool_calls": [{"index": index, "function": {"arguments": part}}]})
        yield event({}, finish)
        yield "data: [DONE]\n\n"

    # -------------------------------------------------------------------------------- Ollama

    def ollama_app(self) -> Starlette:
        return Starlette(routes=[Route("/api/chat", self._ollama, methods=["POST"])])

    async def _ollama(self, request: Request) -> Response:
        body = await request.json()
        self.requests.append(body)
        if "hang" in self.quirks:
            return await _hang(request)
        for message in body["messages"]:
            for call in message.get("tool_calls") or []:
                if not isinstance(call["function"].get("arguments"), dict):
                    return JSONResponse({"error": "json: cannot unmarshal string into Go struct field "
                                                  "ToolCallFunction.arguments"}, status_code=400)
        turn = self._turn(body["messages"], body.get("tools"))
        content, calls = self._render(turn)
        tool_calls = [{"function": {"name": c["name"], "arguments": c["arguments"]}} for c in calls]
        done = {"model": body["model"], "done": True, "done_reason": "stop", "prompt_eval_count": 7, "eval_count": 3}
        if not body.get("stream", True):
            message: dict[str, Any] = {"role": "assistant", "content": content}
            if tool_calls:
                message["tool_calls"] = tool_calls
            return JSONResponse({**done, "message": message})

        async def lines() -> AsyncIterator[str]:
            for piece in self._pieces(content):
                yield json.dumps({"model": body["model"], "message": {"role": "assistant", "content": piece},
                                  "done": False}) + "\n"
            if tool_calls:
                yield json.dumps({"model": body["model"], "done": False,
                                  "message": {"role": "assistant", "content": "", "tool_calls": tool_calls}}) + "\n"
            yield json.dumps({**done, "message": {"role": "assistant", "content": ""}}) + "\n"

        return StreamingResponse(lines(), media_type="application/x-ndjson")

    # -------------------------------------------------------------------------------- common

    def _turn(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> Turn:
        return self.script(messages, tools)

    def _render(self, turn: Turn) -> tuple[str, list[dict[str, Any]]]:
        """The turn as (content, native calls), quirks applied."""
        content = turn.content
        calls = []
        for name, arguments in turn.calls:
            self._ids += 1
            call_id = None if "no_ids" in self.quirks else ("call_0" if "same_ids" in self.quirks
                                                             else f"call_fake_{self._ids}")
            calls.append({"id": call_id, "name": name, "arguments": arguments})
        if calls and "tagged" in self.quirks:
            content += "".join(
                f"\n<tool_call>\n{json.dumps({'name': c['name'], 'arguments': c['arguments']})}\n</tool_call>"
                for c in calls)
            calls = []
        elif calls and "fenced" in self.quirks:
            items = [{"name": c["name"], "arguments": c["arguments"]} for c in calls]
            content += "\n```json\n" + json.dumps(items[0] if len(items) == 1 else items, indent=2) + "\n```"
            calls = []
        if "think" in self.quirks:
            content = REASONING + content
        return content, calls

    def _pieces(self, text: str) -> list[str]:
        return [text[i: i + self.chunk_size] for i in range(0, len(text), self.chunk_size)]


async def _hang(request: Request) -> Response:
    """Answer nothing until the client hangs up (bounded, so a test server always shuts down)."""
    with anyio.move_on_after(HANG_LIMIT):
        while (await request.receive())["type"] != "http.disconnect":
            pass
    return Response(status_code=204)


def _openai_transcript_problem(messages: list[dict[str, Any]]) -> str | None:
    """What OpenAI checks: each assistant tool call answered by exactly one tool message, by id."""
    pending: dict[str, int] = {}
    for message in messages:
        role = message.get("role")
        if role == "assistant" and message.get("tool_calls"):
            if pending:
                return f"tool_call_ids did not have response messages: {', '.join(pending)}"
            for call in message["tool_calls"]:
                call_id = call.get("id")
                if not call_id or call_id in pending:
                    return f"invalid or duplicate tool call id {call_id!r}"
                pending[call_id] = 1
        elif role == "tool":
            call_id = message.get("tool_call_id")
            if call_id not in pending:
                return f"messages with role 'tool' must be a response to a preceding tool call ({call_id!r})"
            del pending[call_id]
        elif pending:
            return f"tool_call_ids did not have response messages: {', '.join(pending)}"
    return None
