"""Write tools (issue_write, add_issue_comment), registered only when GITHUB_READ_ONLY=0."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations
from pydantic import Field

from mcphub_servers.github import models as m
from mcphub_servers.github.client import GitHubAPI, repo_path

# update replaces title/body/labels, so it may destroy what was there; neither call is idempotent
ISSUE_WRITE = ToolAnnotations(
    read_only_hint=False, destructive_hint=True, idempotent_hint=False, open_world_hint=True
)
ADD_COMMENT = ToolAnnotations(
    read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=True
)


def _shaped_issue(where: str, raw: Any) -> m.Issue:
    try:
        return m.issue(raw)
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise ToolError(
            f"{where} answered JSON of an unexpected shape ({type(exc).__name__}: {exc})"
        ) from None


def register_write_tools(mcp: MCPServer, api: GitHubAPI) -> None:
    root = api.settings.api_url

    @mcp.tool(title="Create or update an issue", annotations=ISSUE_WRITE)
    async def issue_write(
        method: Annotated[Literal["create", "update"], Field(description="create a new issue or update one")],
        owner: Annotated[str, Field(description="Repository owner")],
        repo: Annotated[str, Field(description="Repository name")],
        issue_number: Annotated[int | None, Field(ge=1, description="Required for update")] = None,
        title: Annotated[str | None, Field(description="Required for create")] = None,
        body: str | None = None,
        labels: Annotated[list[str] | None, Field(description="Replaces the issue's labels")] = None,
        assignees: Annotated[list[str] | None, Field(description="Replaces the issue's assignees")] = None,
        milestone: Annotated[int | None, Field(description="Milestone number")] = None,
        state: Literal["open", "closed"] | None = None,
        state_reason: Literal["completed", "not_planned", "duplicate", "reopened"] | None = None,
    ) -> m.Issue:
        """Create an issue, or change an existing one's fields (only the fields given are changed)."""
        fields: dict[str, object] = {"title": title, "body": body, "labels": labels, "assignees": assignees}
        fields |= {"milestone": milestone, "state": state, "state_reason": state_reason}
        payload = {k: v for k, v in fields.items() if v is not None}
        if method == "create":
            if not title:
                raise ToolError("issue_write create needs a title")
            if state or state_reason:
                raise ToolError("issue_write create takes no state; create, then update")
            where = f"{repo_path(owner, repo)}/issues"
            return _shaped_issue(f"POST {root}{where}", await api.send_json("POST", where, payload))
        if issue_number is None:
            raise ToolError("issue_write update needs issue_number")
        if not payload:
            raise ToolError("issue_write update needs at least one field to change")
        where = f"{repo_path(owner, repo)}/issues/{issue_number}"
        return _shaped_issue(f"PATCH {root}{where}", await api.send_json("PATCH", where, payload))

    @mcp.tool(title="Comment on an issue or pull request", annotations=ADD_COMMENT)
    async def add_issue_comment(
        owner: Annotated[str, Field(description="Repository owner")],
        repo: Annotated[str, Field(description="Repository name")],
        issue_number: Annotated[int, Field(ge=1, description="Issue or pull request number")],
        body: Annotated[str, Field(min_length=1, description="Comment text (Markdown)")],
    ) -> m.Comment:
        """Add a comment to an issue or pull request."""
        where = f"{repo_path(owner, repo)}/issues/{issue_number}/comments"
        raw = await api.send_json("POST", where, {"body": body})
        try:
            return m.comment(raw)
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise ToolError(
                f"POST {root}{where} answered JSON of an unexpected shape ({type(exc).__name__}: {exc})"
            ) from None
