"""Pure mapping of MCP call outcomes to what an HTTP client gets.

- `structuredContent` when the server sent it;
- else the content list without loss: text (parsed as JSON when it is JSON), image and audio with MIME
  type and base64 data, resource links and embedded resources with URI and content. One block is
  returned as itself, several as a list, none as null;
- `isError` results and MCP error answers become `ToolCallFailed` carrying the tool's own text.
"""

from __future__ import annotations

import json
from typing import Any

from mcp import MCPError
from mcp.types import (
    AudioContent,
    BlobResourceContents,
    CallToolResult,
    ContentBlock,
    EmbeddedResource,
    ImageContent,
    ResourceLink,
    TextContent,
    TextResourceContents,
)

from mcphub.errors import ToolCallFailed

MAX_ERROR_CHARS = 4000  # a tool's error text is shown to a model; keep it readable


def to_body(result: CallToolResult, *, server: str, tool: str) -> object:
    """The JSON body for a successful call; raises ToolCallFailed for an `isError` result."""
    if result.is_error:
        raise ToolCallFailed(error_text(result) or f"tool '{tool}' failed without a message", server=server, tool=tool)
    if result.structured_content is not None:
        return result.structured_content
    blocks = [block_to_json(block) for block in result.content]
    if not blocks:
        return None
    return blocks[0] if len(blocks) == 1 else blocks


def from_mcp_error(exc: MCPError, *, server: str, tool: str) -> ToolCallFailed:
    """An MCP error answer from the server (e.g. -32602 invalid params) is the tool's own error."""
    message = exc.message or f"MCP error {exc.code}"
    return ToolCallFailed(_clip(message), server=server, tool=tool)


def error_text(result: CallToolResult) -> str:
    """The text of an `isError` result: its text blocks joined, else the structured content as JSON."""
    parts = [block.text for block in result.content if isinstance(block, TextContent) and block.text]
    if not parts and result.structured_content is not None:
        parts = [json.dumps(result.structured_content, ensure_ascii=False)]
    if not parts:
        parts = [json.dumps(block_to_json(b), ensure_ascii=False) for b in result.content]
    return _clip("\n".join(parts))


def block_to_json(block: ContentBlock) -> object:
    """One content block as JSON (a dict, or for text its JSON value or the text itself)."""
    if isinstance(block, TextContent):
        return _maybe_json(block.text)
    if isinstance(block, ImageContent | AudioContent):
        kind = "image" if isinstance(block, ImageContent) else "audio"
        return {"type": kind, "mimeType": block.mime_type, "data": block.data}
    if isinstance(block, ResourceLink):
        return _drop_none(
            {
                "type": "resource_link",
                "uri": str(block.uri),
                "name": block.name,
                "title": block.title,
                "description": block.description,
                "mimeType": block.mime_type,
                "size": block.size,
            }
        )
    if isinstance(block, EmbeddedResource):
        res = block.resource
        out: dict[str, Any] = {"type": "resource", "uri": str(res.uri), "mimeType": res.mime_type}
        if isinstance(res, TextResourceContents):
            out["text"] = res.text
        elif isinstance(res, BlobResourceContents):
            out["blob"] = res.blob
        return _drop_none(out)
    # A content type newer than this hub: keep it whole rather than drop it.
    return block.model_dump(mode="json", by_alias=True, exclude_none=True)


def _maybe_json(text: str) -> object:
    stripped = text.strip()
    if stripped[:1] in ('{', '[', '"') or stripped in ("true", "false", "null") or _looks_numeric(stripped):
        try:
            return json.loads(stripped)
        except ValueError:
            pass
    return text


def _looks_numeric(text: str) -> bool:
    return bool(text) and (text[0].isdigit() or (text[0] == "-" and text[1:2].isdigit()))


def _drop_none(mapping: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in mapping.items() if v is not None}


def _clip(text: str) -> str:
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 1] + "…"
