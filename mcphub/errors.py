"""mcphub's exceptions, each with the HTTP status and error `type` a client sees.

HubError                      500 internal_error
  ConfigError                 (startup and reload only; never reaches HTTP; the CLI exits 2)
  BadRequest                  400 bad_request        an HTTP request that cannot be parsed
  AuthError
    Unauthorized              401 unauthorized       no or bad credential
    Forbidden                 403 forbidden          credential not allowed here
      CrossSiteRequest        403 forbidden          a page of another site posting to a hub with no credential
      OAuthRequired           403 oauth_required     the user has not connected their account of an OAuth
                                                     server (+ `connect_url` in the body; mcphub/oauth.py)
  NotFound                    404 not_found          unknown server or tool
  RequestTimeout              408 request_timeout    the request's headers did not arrive in time
  BodyTooLarge                413 body_too_large     a request body over hub.limits.max_body_bytes
  UnsupportedMediaType        415 unsupported_media_type  a body that is not declared application/json
  MisdirectedRequest          421 misdirected_request  a Host the hub does not answer to (DNS rebinding)
  RateLimited                 429 rate_limited       a key's, a token subject's or a server's rate limit, or
                                                     too many concurrent calls of one caller (+ Retry-After)
  HeadersTooLarge             431 headers_too_large  request headers over hub.limits.max_header_bytes / max_headers
  InvalidArguments            422 invalid_arguments  arguments break the tool's input schema
  ToolCallFailed              400 tool_error         the tool's own error (isError or an MCP error answer)
  BadUpstreamResponse         502 bad_gateway        the server answered something that is not MCP
  ServerUnavailable           503 server_unavailable server down, starting or restarting (+ Retry-After)
  ToolTimeout                 504 timeout            no answer within the call's timeout
  MountLoop                   508 mount_loop         a hub asked to list itself through another hub

Every error renders as one JSON body (`error_body`):
    {"error": {"type": ..., "message": ..., "server": ..., "tool": ...}}
plus `"errors": [{"loc": [...], "msg": ...}]` for InvalidArguments (the TypedDicts `ErrorBody`, `ArgumentError`).
This module imports nothing from mcphub.
"""

from __future__ import annotations

from typing import NotRequired, TypedDict


class ArgumentError(TypedDict):
    """One reason the arguments were refused: where (`["body", "city"]`) and what."""

    loc: list[str | int]
    msg: str


class ErrorDetail(TypedDict):
    type: str
    message: str
    server: NotRequired[str]
    tool: NotRequired[str]
    errors: NotRequired[list[ArgumentError]]
    connect_url: NotRequired[str]


class ErrorBody(TypedDict):
    """The one JSON error body every face sends."""

    error: ErrorDetail


class HubError(Exception):
    status_code = 500
    type = "internal_error"

    def __init__(self, message: str, *, server: str | None = None, tool: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.server = server
        self.tool = tool

    def body(self) -> ErrorBody:
        return error_body(self.type, self.message, server=self.server, tool=self.tool)

    def headers(self) -> dict[str, str]:
        return {}


class ConfigError(HubError):
    """A config file or command line that cannot be used. The message names file, dotted path and value."""

    type = "config_error"


class BadRequest(HubError):
    status_code = 400
    type = "bad_request"


class AuthError(HubError):
    pass


class Unauthorized(AuthError):
    status_code = 401
    type = "unauthorized"

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": "Bearer"}


class Forbidden(AuthError):
    status_code = 403
    type = "forbidden"


class CrossSiteRequest(Forbidden):
    """With no credential configured, a browser would let any site's page post to the hub (CSRF)."""


class OAuthRequired(Forbidden):
    """The calling user has no (or no longer a) connection to an OAuth-protected server: `url` is where
    they connect it, a short-lived single-use link bound to them (its text is in the message too)."""

    type = "oauth_required"

    def __init__(self, message: str, url: str, *, server: str | None = None, tool: str | None = None) -> None:
        super().__init__(message, server=server, tool=tool)
        self.url = url

    def body(self) -> ErrorBody:
        body = super().body()
        body["error"]["connect_url"] = self.url
        return body


class NotFound(HubError):
    status_code = 404
    type = "not_found"


class RequestTimeout(HubError):
    status_code = 408
    type = "request_timeout"


class BodyTooLarge(HubError):
    status_code = 413
    type = "body_too_large"


class UnsupportedMediaType(HubError):
    status_code = 415
    type = "unsupported_media_type"


class MisdirectedRequest(HubError):
    status_code = 421
    type = "misdirected_request"


class HeadersTooLarge(HubError):
    status_code = 431
    type = "headers_too_large"


class _RetryLater(HubError):
    """An error that tells the client when to try again (`Retry-After`, whole seconds, at least 1)."""

    def __init__(
        self, message: str, *, retry_after: int = 1, server: str | None = None, tool: str | None = None
    ) -> None:
        super().__init__(message, server=server, tool=tool)
        self.retry_after = max(1, int(retry_after))

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class RateLimited(_RetryLater):
    status_code = 429
    type = "rate_limited"


class InvalidArguments(HubError):
    status_code = 422
    type = "invalid_arguments"

    def __init__(
        self,
        message: str,
        errors: list[ArgumentError],
        *,
        server: str | None = None,
        tool: str | None = None,
    ) -> None:
        super().__init__(message, server=server, tool=tool)
        self.errors = errors

    def body(self) -> ErrorBody:
        body = super().body()
        body["error"]["errors"] = self.errors
        return body


class ToolCallFailed(HubError):
    """The tool ran and said it failed. 400, never 5xx: clients retry 5xx and the tool may have side effects."""

    status_code = 400
    type = "tool_error"


class BadUpstreamResponse(HubError):
    status_code = 502
    type = "bad_gateway"


class ServerUnavailable(_RetryLater):
    status_code = 503
    type = "server_unavailable"


class ToolTimeout(HubError):
    status_code = 504
    type = "timeout"


def error_body(
    type_: str, message: str, *, server: str | None = None, tool: str | None = None
) -> ErrorBody:
    error: ErrorDetail = {"type": type_, "message": message}
    if server is not None:
        error["server"] = server
    if tool is not None:
        error["tool"] = tool
    return {"error": error}


class MountLoop(HubError):
    status_code = 508
    type = "mount_loop"


def exception_line(exc: BaseException, *, limit: int = 300) -> str:
    """`Type: first line of the message` (cut to `limit`), for logs and `last_error`: never a traceback."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0][:limit]}" if lines else type(exc).__name__
