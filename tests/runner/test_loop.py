"""The tool-use loop in-process: a scripted backend object and a stub ToolCaller, no sockets."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from mcphub.runner.backends import OnText
from mcphub.runner.loop import Runner
from mcphub.runner.messages import Message, ModelReply, ToolCall, parse_arguments
from mcphub.runner.tools import ToolOutcome

pytestmark = pytest.mark.anyio


class ScriptedBackend:
    """Replies from `script(messages, tools)`; when streaming, the content arrives one character at a time."""

    def __init__(self, script: Callable[[list[Message], Any], ModelReply]) -> None:
        self.script = script
        self.seen: list[list[Message]] = []

    async def chat(self, messages: list[Message], tools: Any, *, model: str, options: Any = None,
                   on_text: OnText | None = None) -> ModelReply:
        self.seen.append([dict(m) for m in messages])
        reply = self.script(messages, tools)
        if on_text is not None:
            for char in reply.content:
                await on_text(char)
        return reply


class Tools:
    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def definitions(self) -> list[dict[str, Any]]:
        return [{"type": "function", "function": {"name": n, "parameters": {"type": "object"}}}
                for n in ("double", "explode")]

    def has(self, name: str) -> bool:
        return name in ("double", "explode")

    async def call(self, name: str, arguments: dict[str, Any]) -> ToolOutcome:
        self.calls.append((name, arguments))
        if name == "explode":
            raise RuntimeError("boom")
        return ToolOutcome(True, {"value": arguments["n"] * 2})


def tool_texts(messages: list[Message]) -> list[str]:
    return [m["content"] for m in messages if m["role"] == "tool"]


async def run(script: Callable[[list[Message], Any], ModelReply], *, stream: bool,
              history: list[Message] | None = None) -> tuple[str, ScriptedBackend, Tools]:
    backend, tools = ScriptedBackend(script), Tools()
    pieces: list[str] = []

    async def on_text(text: str) -> None:
        pieces.append(text)

    runner = Runner(backend, tools, model="m", max_steps=4)
    result = await runner.chat(history or [{"role": "user", "content": "go"}], on_text=on_text if stream else None)
    if stream:
        assert "".join(pieces) == result.answer
    return result.answer, backend, tools


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "char by char"])
async def test_reasoning_is_dropped_and_lookalike_tags_are_kept(stream: bool) -> None:
    text = "<think>maybe <tool_call> or ```?</think>\n\nUse <b>bold</b> and a < b, `x`."
    answer, _, _ = await run(lambda m, t: ModelReply(text), stream=stream)
    assert answer == "Use <b>bold</b> and a < b, `x`."


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "char by char"])
async def test_prose_about_tool_call_tags_is_an_answer_not_a_call(stream: bool) -> None:
    text = "Models write <tool_call> tags, like <tool_call>this</tool_call>."
    answer, backend, _ = await run(lambda m, t: ModelReply(text), stream=stream)
    assert answer == text and len(backend.seen) == 1


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "char by char"])
async def test_a_closing_think_tag_without_an_opening_one_drops_what_precedes_it(stream: bool) -> None:
    answer, _, _ = await run(lambda m, t: ModelReply("the template opened it\n</think>\nAnswer."), stream=stream)
    assert answer == "Answer."


def _double_then_answer(first: str, second: str) -> Callable[[list[Message], Any], ModelReply]:
    def script(messages: list[Message], tools: Any) -> ModelReply:
        if not any(m["role"] == "tool" for m in messages):
            return ModelReply(first, [ToolCall("c1", "double", {"n": 2})])
        return ModelReply(second)
    return script


async def test_unopened_reasoning_is_dropped_from_every_streamed_turn() -> None:
    script = _double_then_answer("I should double 2.\n</think>\n", "It doubled to 4, so\n</think>\nThe answer is 4.")
    answer, backend, tools = await run(script, stream=True)
    assert answer == "The answer is 4." and tools.calls == [("double", {"n": 2})] and len(backend.seen) == 2


class TimedBackend(ScriptedBackend):
    """Also notes how many pieces of the answer had been shown when each streamed reply was complete."""

    def __init__(self, script: Callable[[list[Message], Any], ModelReply], shown: list[str]) -> None:
        super().__init__(script)
        self.shown, self.shown_at_end = shown, []  # type: list[str], list[int]

    async def chat(self, messages: list[Message], tools: Any, *, model: str, options: Any = None,
                   on_text: OnText | None = None) -> ModelReply:
        reply = await super().chat(messages, tools, model=model, options=options, on_text=on_text)
        self.shown_at_end.append(len(self.shown))
        return reply


@pytest.mark.parametrize(("first", "held_later"), [("", False), ("Let me double it.", False),
                                                   ("reasoning</think>Let me double it.", True)],
                         ids=["native call, no text", "plain text", "unopened reasoning"])
async def test_the_first_turn_decides_whether_later_turns_wait_for_a_tag(first: str, held_later: bool) -> None:
    shown: list[str] = []

    async def on_text(text: str) -> None:
        shown.append(text)

    backend = TimedBackend(_double_then_answer(first, "The answer is 4."), shown)
    result = await Runner(backend, Tools(), model="m").chat([{"role": "user", "content": "go"}], on_text=on_text)
    assert result.answer == ("Let me double it.\n\nThe answer is 4." if first else "The answer is 4.")
    assert (backend.shown_at_end[0] == 0) is (not held_later)  # held whole, unless a tag decided sooner
    assert "reasoning" not in "".join(shown)
    during_second = backend.shown_at_end[1] - backend.shown_at_end[0]
    assert (during_second == 0) is held_later, (shown, backend.shown_at_end)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "char by char"])
async def test_a_tagged_call_with_broken_json_goes_back_as_an_error_and_the_chat_goes_on(stream: bool) -> None:
    def script(messages: list[Message], tools: Any) -> ModelReply:
        if not tool_texts(messages):
            return ModelReply('<tool_call>{"name": "double", "arguments": {"n": </tool_call>')
        return ModelReply("Sorry: " + tool_texts(messages)[0])

    answer, _, tools = await run(script, stream=stream)
    assert answer == "Sorry: Error: no tool was called: a tool_call tag did not hold valid JSON with a 'name'"
    assert tools.calls == []


async def test_double_encoded_arguments_and_a_tool_that_raises_both_reach_the_model() -> None:
    def script(messages: list[Message], tools: Any) -> ModelReply:
        if not tool_texts(messages):
            return ModelReply(tool_calls=[ToolCall("a", "double", *_args(json.dumps(json.dumps({"n": 21})))),
                                          ToolCall("b", "explode", {}, None)])
        return ModelReply(" / ".join(tool_texts(messages)))

    answer, _, tools = await run(script, stream=False)
    assert answer == "{\"value\": 42} / Error: tool 'explode' failed inside the hub (see its log)"
    assert tools.calls == [("double", {"n": 21}), ("explode", {})]


async def test_a_call_id_already_in_the_clients_history_is_replaced() -> None:
    history = [
        {"role": "user", "content": "before"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "call_0", "type": "function", "function": {"name": "double", "arguments": '{"n": 1}'}}]},
        {"role": "tool", "tool_call_id": "call_0", "content": '{"value": 2}'},
        {"role": "user", "content": "again"},
    ]

    def script(messages: list[Message], tools: Any) -> ModelReply:
        if len(tool_texts(messages)) == 1:
            return ModelReply(tool_calls=[ToolCall("call_0", "double", {"n": 5})])
        return ModelReply("done")

    answer, backend, _ = await run(script, stream=False, history=history)
    assert answer == "done"
    ids = [c["id"] for m in backend.seen[-1] for c in m.get("tool_calls") or []]
    assert ids[0] == "call_0" and ids[1] != "call_0" and ids[1].startswith("call_")
    assert backend.seen[-1][-1] == {"role": "tool", "tool_call_id": ids[1], "name": "double",
                                    "content": '{"value": 10}'}


def _args(raw: str) -> tuple[dict[str, Any] | None, str | None]:
    return parse_arguments(raw)
