"""A misbehaving MCP server, hand-written JSON-RPC over stdio: `python -m tests.mcp_servers.garbage`.

It reads one JSON message per line from stdin and answers the handshake properly (`server/discover`
is refused with -32601 so the client falls back to `initialize`; then `tools/list`). Its tools:

- `ok(text)`: a proper result echoing `text` (proves the session still works after the others);
- `garbage(text)`: writes lines that are not JSON to stdout, and never answers the call;
- `malformed(text)`: answers with a JSON-RPC response whose `result` is not a CallToolResult;
- `noise_then_ok(text)`: writes non-JSON lines, then the proper answer;
- `hang(text)`: never answers, ignores cancellation.
- `surrogate(text)`: answers with JSON that holds a lone surrogate escape (`\\ud800`), which is valid JSON
  but not Unicode text, so the SDK's parser refuses the line;
- `bad_utf8(text)`: answers with a line whose bytes are not UTF-8.

Env: GARBAGE_MARKERS=<dir>: each `tools/call` drops a file `call-<id>` there on arrival, so a test can
see how many calls reached the server.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from tests.mcp_servers.lines import method_not_found, result, send, serve

MARKERS = os.environ.get("GARBAGE_MARKERS")
TEXT_ARG = {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}
TOOLS = [
    {"name": name, "description": description, "inputSchema": TEXT_ARG}
    for name, description in [
        ("ok", "Echo the text back, properly."),
        ("garbage", "Write non-JSON lines to stdout and never answer."),
        ("malformed", "Answer with a result that is not a CallToolResult."),
        ("noise_then_ok", "Write non-JSON lines, then answer properly."),
        ("hang", "Never answer."),
        ("surrogate", "Answer with a lone surrogate escape in the text."),
        ("bad_utf8", "Answer with a line that is not UTF-8."),
    ]
]
NOISE = ["this is not json", "{ still not json", "\x00\x01 binary-ish \x7f", "]]]"]


def raw(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def call_tool(request_id: Any, params: dict[str, Any]) -> None:
    name = params.get("name")
    text = str((params.get("arguments") or {}).get("text", ""))
    if MARKERS:
        Path(MARKERS, f"call-{request_id}").write_text(str(name), encoding="utf-8")
    if name == "ok":
        result(request_id, {"content": [{"type": "text", "text": text}], "isError": False})
    elif name == "garbage":
        for line in NOISE:
            raw(line)
    elif name == "malformed":
        result(request_id, {"content": "this should be a list", "isError": "maybe"})
    elif name == "noise_then_ok":
        for line in NOISE:
            raw(line)
        result(request_id, {"content": [{"type": "text", "text": text}], "isError": False})
    elif name == "hang":
        pass
    elif name == "surrogate":  # json.dumps writes the lone surrogate as the escape \ud800
        result(request_id, {"content": [{"type": "text", "text": text + "\ud800"}], "isError": False})
    elif name == "bad_utf8":
        sys.stdout.flush()
        answer = json.dumps({"jsonrpc": "2.0", "id": request_id, "result": {"content": [
            {"type": "text", "text": "@@"}], "isError": False}}).encode()
        sys.stdout.buffer.write(answer.replace(b"@@", b"\xff\xfe") + b"\n")
        sys.stdout.buffer.flush()
    else:
        send({"jsonrpc": "2.0", "id": request_id, "error": {"code": -32602, "message": f"unknown tool {name!r}"}})


def handle(message: dict[str, Any]) -> None:
    method = message.get("method")
    request_id = message.get("id")
    if request_id is None:  # a notification (initialized, cancelled, ...): nothing to answer
        return
    if method == "initialize":
        version = (message.get("params") or {}).get("protocolVersion", "2025-06-18")
        result(
            request_id,
            {
                "protocolVersion": version,
                "capabilities": {"tools": {}},
                "serverInfo": {"name": "garbage", "version": "0.0.1"},
            },
        )
    elif method == "tools/list":
        result(request_id, {"tools": TOOLS})
    elif method == "tools/call":
        call_tool(request_id, message.get("params") or {})
    elif method == "ping":
        result(request_id, {})
    else:  # server/discover among others: refused, so the client falls back to `initialize`
        method_not_found(request_id, method)


def main() -> None:
    serve(handle)


if __name__ == "__main__":
    main()
