"""Resources and prompts: what every face shares about them.

- Asking a local server over its `Client`: every page of a list (bounded), an empty list where the
  server does not declare the capability (a server without resources has none; that is not an error).
- The combined endpoint's names (`/mcp` serves every server at once, so names and URIs must be unique
  per server, and reversible):
    prompts     `{server}_{name}`, unsanitised (prompt names have no character rules); a name resolves
                to the longest server name that prefixes it followed by `_`.
    resources   `mcphub://{server}/{original URI}`, the original appended verbatim (not escaped), so a
                template `mcphub://{server}/file:///{path}` expands to exactly the prefix plus what the
                server's own template would have expanded to; the prefix comes off again on read.
  A server's own endpoint (`/{server}/mcp`) and the HTTP routes use the server's own names and URIs.
- The kinds of request, as the invoker audits and counts them (`Ask.method`: the MCP method name;
  tool names cannot contain `/`, so these never collide with a tool's metrics label).

Who may see them: a key that may use a server sees its resources and prompts, unless the key is
limited to some tools (`tools:` in its config): resources and prompts are not tools, and a key narrowed
to tools is narrowed to them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Literal, TypeAlias, TypeVar, get_args

from mcp import Client, MCPError
from mcp.types import (
    INVALID_PARAMS,
    GetPromptResult,
    PaginatedRequestParams,
    Prompt,
    ReadResourceResult,
    Resource,
    ResourceTemplate,
)

from mcphub.errors import HubError, InvalidArguments, NotFound, ToolCallFailed
from mcphub.toolserver import Json

MAX_LIST_PAGES = 100  # bound on resources/prompts list pagination (a server that loops its cursor)
RESOURCE_NOT_FOUND = -32002  # the MCP spec's JSON-RPC code for an unknown resource URI
URI_SCHEME = "mcphub://"  # the combined endpoint's resource URIs: mcphub://{server}/{original URI}

Method: TypeAlias = Literal[
    "resources/list", "resources/templates/list", "resources/read", "prompts/list", "prompts/get"]
METHODS: frozenset[str] = frozenset(get_args(Method))

T = TypeVar("T")


# ------------------------------------------------------------------------------ asking a server


async def _pages(fetch: Callable[[PaginatedRequestParams | None], Awaitable[tuple[list[T], str | None]]]) -> list[T]:
    items: list[T] = []
    cursor: str | None = None
    for _ in range(MAX_LIST_PAGES):
        page, cursor = await fetch(PaginatedRequestParams(cursor=cursor) if cursor else None)
        items.extend(page)
        if not cursor:
            break
    return items


async def list_resources(client: Client) -> list[Resource]:
    caps = client.server_capabilities
    if caps is None or caps.resources is None:
        return []

    async def fetch(params: PaginatedRequestParams | None) -> tuple[list[Resource], str | None]:
        page = await client.session.list_resources(params=params)
        return page.resources, page.next_cursor

    return await _pages(fetch)


async def list_resource_templates(client: Client) -> list[ResourceTemplate]:
    caps = client.server_capabilities
    if caps is None or caps.resources is None:
        return []

    async def fetch(params: PaginatedRequestParams | None) -> tuple[list[ResourceTemplate], str | None]:
        page = await client.session.list_resource_templates(params=params)
        return page.resource_templates, page.next_cursor

    return await _pages(fetch)


async def list_prompts(client: Client) -> list[Prompt]:
    caps = client.server_capabilities
    if caps is None or caps.prompts is None:
        return []

    async def fetch(params: PaginatedRequestParams | None) -> tuple[list[Prompt], str | None]:
        page = await client.session.list_prompts(params=params)
        return page.prompts, page.next_cursor

    return await _pages(fetch)


def declared(client: Client) -> frozenset[str]:
    """Which of `resources` and `prompts` the server declares."""
    caps = client.server_capabilities
    if caps is None:
        return frozenset()
    return frozenset(k for k, v in (("resources", caps.resources), ("prompts", caps.prompts)) if v is not None)


def declares(client: Client, method: Method) -> bool:
    """Whether the server declared what `method` needs (a read or get of an undeclared kind is NotFound)."""
    caps = client.server_capabilities
    if caps is None:
        return False
    return (caps.prompts if method.startswith("prompts/") else caps.resources) is not None


# ------------------------------------------------------------------------ the combined endpoint


def combined_uri(server: str, uri: str) -> str:
    return f"{URI_SCHEME}{server}/{uri}"


def split_uri(uri: str) -> tuple[str, str]:
    """`mcphub://{server}/{original}` → (server, original); MCPError -32002 for any other URI."""
    if uri.startswith(URI_SCHEME):
        server, slash, original = uri[len(URI_SCHEME):].partition("/")
        if server and slash and original:
            return server, original
    raise MCPError(RESOURCE_NOT_FOUND, f"Unknown resource: {uri} (resources on /mcp are named "
                                       f"{URI_SCHEME}{{server}}/{{uri}}, as resources/list gives them)")


def combined_prompt(server: str, name: str) -> str:
    return f"{server}_{name}"


def split_prompt(name: str, servers: Iterable[str]) -> tuple[str, str]:
    """`{server}_{name}` → (server, name), the longest server name first; MCPError -32602 for no match."""
    for server in sorted(servers, key=len, reverse=True):
        if name.startswith(f"{server}_") and len(name) > len(server) + 1:
            return server, name[len(server) + 1:]
    raise MCPError(INVALID_PARAMS, f"Unknown prompt: {name} (prompts on /mcp are named {{server}}_{{prompt}})")


# ------------------------------------------------------------------------------- HTTP bodies


Answer: TypeAlias = list[Resource] | list[ResourceTemplate] | list[Prompt] | ReadResourceResult | GetPromptResult

_LIST_KEYS: dict[str, str] = {"resources/list": "resources", "resources/templates/list": "resourceTemplates",
                              "prompts/list": "prompts"}


def to_body(method: Method, answer: Answer) -> dict[str, Json]:
    """The answer as the HTTP face sends it: MCP's own wire form (camelCase, no nulls), lists under the
    key the MCP result uses (`resources`, `resourceTemplates`, `prompts`)."""
    if isinstance(answer, list):
        return {_LIST_KEYS[method]: [item.model_dump(mode="json", by_alias=True, exclude_none=True) for item in answer]}
    dumped: dict[str, Json] = answer.model_dump(mode="json", by_alias=True, exclude_none=True,
                                                exclude={"meta", "result_type", "ttl_ms", "cache_scope"})
    return dumped


def from_mcp_error(exc: MCPError, method: Method, *, server: str, target: str) -> HubError:
    """The server's JSON-RPC error to a read or get as a hub error: an unknown resource is NotFound
    (-32002, the spec's code, or -32602, which the Python SDK's servers answer), anything else the
    server's own error (400)."""
    message = exc.message or f"MCP error {exc.code}"
    if method == "resources/read" and exc.code in (RESOURCE_NOT_FOUND, INVALID_PARAMS):
        return NotFound(f"server '{server}' has no resource '{target}' ({message})", server=server)
    return ToolCallFailed(f"server '{server}' answered {method} for '{target}' with an error: {message}",
                          server=server)


def check_prompt_arguments(prompt: Prompt, arguments: Mapping[str, str], *, server: str) -> None:
    """The prompt's required arguments are there (servers word a missing one differently, or hide it)."""
    missing = [a.name for a in prompt.arguments or () if a.required and a.name not in arguments]
    if missing:
        raise InvalidArguments(
            f"prompt '{prompt.name}' of server '{server}' needs the argument{'s' if len(missing) > 1 else ''} "
            f"{', '.join(repr(m) for m in missing)}",
            [{"loc": ["query", m], "msg": "required argument missing"} for m in missing], server=server)
