"""The tool-use loop: ask the model, run the calls it makes, feed the results back, until it answers.

Bounded: at most `max_steps` requests offer tools; after that, one last request without tools asks
for an answer from what the transcript holds (stop reason `max_steps`). Every tool outcome goes back to
the model as a tool message — a failing tool, an unknown tool name or unreadable arguments are error
text the model can react to, never an exception out of the loop. Results longer than
`max_result_chars` are cut, with a note saying so.

Model quirks handled here, whatever the backend: tool calls with `finish_reason: stop` (calls are used
whenever present); missing or repeated call ids (replaced by fresh unique ones); tool calls written as
text, in `<tool_call>{json}</tool_call>` tags or a fenced JSON block naming an offered tool; `<think>`
reasoning, which never reaches the answer, also when the chat template opened `<think>` in the prompt
and the reply brings only the closing tag. The answer streams through `on_text` as the model writes it,
with reasoning and text tool calls held back. A reply streamed with no tag yet might be such unopened
reasoning, so the first turn of a chat is held until a tag decides it (or the turn ends, and then it is
passed on piece by piece); later turns are held only if an earlier one brought a bare `</think>`.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import anyio

from mcphub.runner.backends import ModelBackend, OnText
from mcphub.runner.messages import (
    Message,
    ModelReply,
    Sampling,
    ToolCall,
    ToolResult,
    new_call_id,
    parse_arguments,
)
from mcphub.runner.tools import ToolCaller

logger = logging.getLogger(__name__)

FINAL_REQUEST = ("The tool-call limit of this chat ({steps} steps) is reached. Answer now from the tool "
                 "results above, without calling any tool; say what is still unknown.")
StopReason = Literal["answer", "max_steps"]


@dataclass
class ChatResult:
    answer: str
    stop_reason: StopReason
    steps: list[ToolResult]  # every tool call made, with what the model was shown, in call order
    messages: list[Message]  # the whole transcript, tool calls and results included
    model_requests: int
    usage: dict[str, int] = field(default_factory=dict)


class Runner:
    def __init__(self, backend: ModelBackend, tools: ToolCaller, *, model: str, max_steps: int = 8,
                 max_result_chars: int = 16000, options: Sampling | None = None) -> None:
        self.backend = backend
        self.tools = tools
        self.model = model
        self.max_steps = max_steps
        self.max_result_chars = max_result_chars
        self.options: Sampling = options or {}

    async def chat(
        self,
        messages: list[Message],
        *,
        on_text: OnText | None = None,
        on_tool_call: Callable[[ToolCall], Awaitable[None]] | None = None,
        on_tool_result: Callable[[ToolResult], Awaitable[None]] | None = None,
    ) -> ChatResult:
        """Run the chat to an answer. With `on_text`, the backend streams and the visible answer is
        handed to `on_text` piece by piece as it arrives."""
        transcript = list(messages)
        seen_ids = {tc.get("id") for m in transcript for tc in m.get("tool_calls") or [] if isinstance(tc, dict)}
        answer = _Answer(on_text)
        steps: list[ToolResult] = []
        usage: dict[str, int] = {}
        definitions = self.tools.definitions()
        requests = 0
        hold = True  # until a turn shows whether this model's replies open with unopened reasoning
        for _ in range(self.max_steps):
            reply, visible = await self._ask(transcript, definitions or None, answer, usage,
                                             streaming=on_text is not None, hold_opening=hold)
            requests += 1
            calls = reply.tool_calls or _calls_in_text(reply.content, self.tools)
            await answer.end_turn(visible.finish(bool(calls)))
            hold = visible.bare_close
            if not calls:
                return ChatResult(answer.text, "answer", steps, transcript + [_assistant(answer.turn, [])],
                                  requests, usage)
            for call in calls:
                if not call.id or call.id in seen_ids:
                    call.id = new_call_id()
                seen_ids.add(call.id)
            transcript.append(_assistant(answer.turn, calls))
            results = await self._run_calls(calls, on_tool_call, on_tool_result)
            steps.extend(results)
            transcript.extend(r.as_message() for r in results)
            if not definitions:
                break  # nothing to offer: the calls were all errors; ask for an answer now
        logger.info("runner: %d tool steps reached; asking %s for a final answer", self.max_steps, self.model)
        transcript.append({"role": "user", "content": FINAL_REQUEST.format(steps=self.max_steps)})
        reply, visible = await self._ask(transcript, None, answer, usage, streaming=on_text is not None,
                                         hold_opening=hold)
        requests += 1
        await answer.end_turn(visible.finish(bool(reply.tool_calls or _calls_in_text(reply.content, self.tools))))
        return ChatResult(answer.text, "max_steps", steps, transcript + [_assistant(answer.turn, [])],
                          requests, usage)

    async def _ask(self, transcript: list[Message], tools: list[dict[str, Any]] | None, answer: _Answer,
                   usage: dict[str, int], *, streaming: bool, hold_opening: bool) -> tuple[ModelReply, _Visible]:
        """One backend request. Returns the reply and its filter (`finish(had_calls)` → the turn's rest)."""
        visible = _Visible(hold_opening=hold_opening)
        answer.begin_turn()

        async def on_text(piece: str) -> None:
            await answer.add(visible.feed(piece))

        reply = await self.backend.chat(transcript, tools, model=self.model, options=self.options,
                                        on_text=on_text if streaming else None)
        if not streaming:
            await answer.add(visible.feed(_drop_unopened_think(reply.content)))
        for key, value in reply.usage.items():
            usage[key] = usage.get(key, 0) + value
        return reply, visible

    async def _run_calls(self, calls: list[ToolCall], on_call: Callable[[ToolCall], Awaitable[None]] | None,
                         on_result: Callable[[ToolResult], Awaitable[None]] | None) -> list[ToolResult]:
        """Run one turn's calls concurrently; results in call order."""
        results: list[ToolResult | None] = [None] * len(calls)

        async def run(i: int, call: ToolCall) -> None:
            results[i] = result = await self._run_call(call)
            if on_result is not None:
                await on_result(result)

        async with anyio.create_task_group() as tg:
            for i, call in enumerate(calls):
                if on_call is not None:
                    await on_call(call)
                tg.start_soon(run, i, call)
        return [r for r in results if r is not None]

    async def _run_call(self, call: ToolCall) -> ToolResult:
        if call.error is not None:
            what = f"tool '{call.name}' was not called" if call.name else "no tool was called"
            return self._result(call, False, f"Error: {what}: {call.error}")
        if not self.tools.has(call.name):
            names = ", ".join(d["function"]["name"] for d in self.tools.definitions()) or "none"
            return self._result(call, False, f"Error: there is no tool named '{call.name}' (tools: {names})")
        try:
            outcome = await self.tools.call(call.name, call.arguments or {})
        except Exception:  # a bug below must not end the chat: the model is told, the log has the trace
            logger.exception("runner: tool %s raised", call.name)
            return self._result(call, False, f"Error: tool '{call.name}' failed inside the hub (see its log)")
        if not outcome.ok:
            return self._result(call, False, f"Error: {outcome.value}")
        value = outcome.value
        return self._result(call, True, value if isinstance(value, str) else json.dumps(value, ensure_ascii=False))

    def _result(self, call: ToolCall, ok: bool, text: str) -> ToolResult:
        if len(text) > self.max_result_chars:
            text = (f"{text[: self.max_result_chars]}\n[mcphub: result cut to {self.max_result_chars} "
                    f"of {len(text)} characters]")
        return ToolResult(call, ok, text)


def _assistant(content: str, calls: list[ToolCall]) -> Message:
    message: Message = {"role": "assistant", "content": content}
    if calls:
        message["tool_calls"] = [c.as_message_part() for c in calls]
    return message


# -------------------------------------------------------------------------------- visible answer


class _Answer:
    """The answer as the user sees it, over all turns: each turn's text trimmed, turns separated by a
    blank line. Trailing whitespace is held back until more text follows, so a turn that ends in tool
    calls leaves no stray newlines behind."""

    def __init__(self, sink: OnText | None) -> None:
        self._sink = sink
        self._parts: list[str] = []
        self._turn: list[str] = []
        self._pending = ""  # whitespace not yet sent

    def begin_turn(self) -> None:
        self._turn = []

    async def add(self, text: str) -> None:
        if not self._turn:
            text = text.lstrip()
            if not text:
                return
            text = ("\n\n" if self._parts else "") + text
        else:
            text = self._pending + text
        shown = text.rstrip()
        self._pending = text[len(shown):]
        if not shown:
            return
        self._turn.append(shown)
        self._parts.append(shown)
        if self._sink is not None:
            await self._sink(shown)

    async def end_turn(self, rest: list[str]) -> None:
        for piece in rest:
            await self.add(piece)

    @property
    def turn(self) -> str:
        return "".join(self._turn).strip()

    @property
    def text(self) -> str:
        return "".join(self._parts).strip()


_THINK_OPEN, _THINK_CLOSE = "<think>", "</think>"
_HOLD = ("<tool_call>", "```")  # a text tool call may start here: hold the rest of the turn back
_MARKERS = (_THINK_OPEN, _THINK_CLOSE, *_HOLD)


class _Visible:
    """Filters a turn's raw text as it streams: `<think>` sections dropped; from a `<tool_call>` tag or
    a code fence on, text is held until the turn ends (`finish`), then dropped if it held tool calls.

    With `hold_opening`, the turn's opening is held too, until a tag shows what it is: a `</think>` with
    no `<think>` before it ends reasoning whose opening tag was in the prompt (dropped, `bare_close`); a
    `<think>` first means ordinary tagged reasoning. Held to the end, the pieces pass on as they came."""

    def __init__(self, *, hold_opening: bool = False) -> None:
        self._buf = ""
        self._thinking = False
        self._held: str | None = None
        self._opening: list[str] | None = [] if hold_opening else None
        self.bare_close = False  # this turn's reasoning came without its opening tag

    def feed(self, text: str) -> str:
        if self._opening is None:
            return self._filter(text)
        self._opening.append(text)
        seen = "".join(self._opening)
        close, start = seen.find(_THINK_CLOSE), seen.lstrip()
        if close >= 0 and _THINK_OPEN not in seen[:close]:
            self._opening, self.bare_close = None, True
            return self._filter(seen[close + len(_THINK_CLOSE):])
        if close >= 0 or start.startswith(_THINK_OPEN):
            self._opening = None
            return self._filter(seen)
        return ""  # no tag yet: this could still be reasoning whose <think> was in the prompt

    def _filter(self, text: str) -> str:
        self._buf += text
        out: list[str] = []
        while self._buf:
            if self._held is not None:
                self._held += self._buf
                self._buf = ""
            elif self._thinking:
                end = self._buf.find(_THINK_CLOSE)
                if end < 0:
                    self._buf = self._buf[-(len(_THINK_CLOSE) - 1):]
                    break
                self._buf = self._buf[end + len(_THINK_CLOSE):]
                self._thinking = False
            else:
                hits = [(self._buf.find(m), m) for m in _MARKERS if m in self._buf]
                if not hits:
                    keep = _partial_marker(self._buf)
                    out.append(self._buf[: len(self._buf) - keep])
                    self._buf = self._buf[len(self._buf) - keep:]
                    break
                at, marker = min(hits)
                out.append(self._buf[:at])
                if marker in _HOLD:
                    self._held, self._buf = self._buf[at:], ""
                else:
                    self._thinking = marker == _THINK_OPEN
                    self._buf = self._buf[at + len(marker):]
        return "".join(out)

    def finish(self, had_calls: bool) -> list[str]:
        """The turn's remaining visible text, in pieces (held opening pieces as they came)."""
        pieces = [self._filter(piece) for piece in self._opening or ()]
        self._opening = None
        rest = "" if self._thinking else self._buf
        if self._held is not None and not had_calls:
            rest += _strip_think(self._held)
        return [*pieces, rest]


def _partial_marker(text: str) -> int:
    """Length of the longest suffix of `text` that could be the start of a marker."""
    for n in range(min(len(text), max(map(len, _MARKERS)) - 1), 0, -1):
        if any(m.startswith(text[-n:]) for m in _MARKERS):
            return n
    return 0


def _strip_think(text: str) -> str:
    return re.sub(r"<think>.*?(</think>|$)", "", text, flags=re.DOTALL)


def _drop_unopened_think(content: str) -> str:
    """Some chat templates open `<think>` in the prompt, so the reply has only the closing tag."""
    close = content.find(_THINK_CLOSE)
    if close >= 0 and _THINK_OPEN not in content[:close]:
        return content[close + len(_THINK_CLOSE):]
    return content


# ------------------------------------------------------------------------------ text tool calls

_TAGGED = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.DOTALL)
_FENCED = re.compile(r"```[a-zA-Z_]*\s*\n?(.*?)```", re.DOTALL)


def _calls_in_text(content: str, tools: ToolCaller) -> list[ToolCall]:
    """Tool calls a model wrote as text: every `<tool_call>` tag; else fenced JSON blocks, but only
    when each names an offered tool (a JSON answer is not hijacked)."""
    text = _strip_think(content)
    bodies = [b for b in _TAGGED.findall(text) if b.startswith(("{", "["))]  # not prose about the tag
    if bodies:
        return [c or ToolCall("", "", None, "a tool_call tag did not hold valid JSON with a 'name'")
                for body in bodies for c in map(_text_call, _json_items(body))]
    fenced = [_text_call(item) for body in _FENCED.findall(text) for item in _json_items(body)]
    if fenced and all(c is not None and tools.has(c.name) for c in fenced):
        return [c for c in fenced if c is not None]
    return []


def _json_items(body: str) -> list[object]:
    try:
        data = json.loads(body)
    except ValueError:
        return [None]
    return data if isinstance(data, list) else [data]


def _text_call(item: object) -> ToolCall | None:
    if not isinstance(item, dict):
        return None
    inner = item.get("function")
    function = inner if isinstance(inner, dict) else item
    name = function.get("name")
    if not isinstance(name, str) or not name:
        return None
    raw = function.get("arguments", function.get("parameters"))
    arguments, error = parse_arguments(raw)
    return ToolCall(id=str(item.get("id") or ""), name=name, arguments=arguments, error=error)
