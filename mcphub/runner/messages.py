"""Chat messages as the runner keeps them, and the request a client sends.

The transcript is a list of OpenAI-style message dicts (`{"role": ..., "content": ..., "tool_calls": ...}`):
that is what clients send and what OpenAI-compatible backends take; the Ollama backend converts at its
edge. Tool calls the model makes are `ToolCall`s with parsed arguments (or the parse error), so the loop
never has to care which backend, or which quirk, produced them.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any, TypedDict

from pydantic import BaseModel, ConfigDict, Field

# An OpenAI-style chat message as JSON: `role`, `content` (text or content parts), `tool_calls`,
# `tool_call_id`, `name`... its fields vary with the role and the client, and are passed on as sent.
Message = dict[str, Any]


class Sampling(TypedDict, total=False):
    """Sampling options a client asked for, in OpenAI spelling; each backend maps them to its own."""

    temperature: float
    top_p: float
    max_tokens: int
    seed: int
    stop: str | list[str]


class ChatRequest(BaseModel):
    """The body of `POST /v1/chat/completions`: what the runner uses; other fields are ignored."""

    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    messages: list[Message] = Field(min_length=1)
    stream: bool = False
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    seed: int | None = None
    stop: str | list[str] | None = None

    def sampling(self) -> Sampling:
        """Sampling options to pass on to the backend, in OpenAI spelling; unset ones left out."""
        options: Sampling = {}
        if self.temperature is not None:
            options["temperature"] = self.temperature
        if self.top_p is not None:
            options["top_p"] = self.top_p
        if (max_tokens := self.max_completion_tokens or self.max_tokens) is not None:
            options["max_tokens"] = max_tokens
        if self.seed is not None:
            options["seed"] = self.seed
        if self.stop is not None:
            options["stop"] = self.stop
        return options


@dataclass
class ToolCall:
    """One call the model asked for. `arguments` is None when `error` says why they could not be read."""

    id: str
    name: str
    arguments: dict[str, Any] | None
    error: str | None = None

    def as_message_part(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": json.dumps(self.arguments or {}, ensure_ascii=False)},
        }


@dataclass
class ModelReply:
    """One answer of the backend: its text (raw, possibly with <think> or text tool calls) and calls."""

    content: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    finish_reason: str | None = None
    usage: dict[str, int] = field(default_factory=dict)


@dataclass
class ToolResult:
    call: ToolCall
    ok: bool
    text: str  # what the model is shown (already cut to max_result_chars)

    def as_message(self) -> Message:
        return {"role": "tool", "tool_call_id": self.call.id, "name": self.call.name, "content": self.text}


def new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


def parse_arguments(raw: object) -> tuple[dict[str, Any] | None, str | None]:
    """Arguments as sent by a backend — a JSON string (OpenAI) or an object (Ollama) — as a dict."""
    if raw is None or raw == "":
        return {}, None
    if isinstance(raw, str):
        text = raw
        try:
            raw = json.loads(text)
        except ValueError as exc:
            return None, f"the arguments are not valid JSON ({exc}): {text[:200]}"
        if isinstance(raw, str):  # some models double-encode
            return parse_arguments(raw)
    if not isinstance(raw, dict):
        return None, f"the arguments must be a JSON object, got {type(raw).__name__}"
    return raw, None


def text_of(content: object) -> str:
    """A message's content as text: a string as is; OpenAI content parts joined (text parts only)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return str(content)
