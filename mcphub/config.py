"""The config file: YAML (or JSON) → a frozen `HubConfig`.

Owns the format, its defaults, `${VAR}` / `${VAR:-default}` expansion, the lenient adapter for
Claude-Desktop / mcpo `{"mcpServers": ...}` files, and error messages that name the file, the dotted
path and the value. Touches no process, socket or web framework.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, overload
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mcphub.errors import ConfigError

DEFAULT_CONFIG_NAME = "mcphub.yaml"
SERVER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,47}$")
_HASH = re.compile(r"^sha256:[0-9a-f]{64}$")
_HOST_PATTERN = re.compile(r"^(\*\.)?[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")  # a DNS name, or *.suffix
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_SECRET_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# `${user.NAME}`: the calling user's secret NAME, filled in per call (user_servers.py), never at load
USER_SECRET = re.compile(r"\$\{user\.([A-Za-z_][A-Za-z0-9_]*)\}")
_USER_PLACEHOLDER = re.compile(r"\$\{\s*user\.")  # any attempt at one, well-formed or not


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HubLimits(_Model):
    """What one request, connection or caller may cost the hub (see mcphub/guard.py, mcphub/connection.py)."""

    max_body_bytes: int = Field(10 * 1024 * 1024, ge=1)  # a request body; more → 413 (tool arguments are small)
    max_header_bytes: int = Field(64 * 1024, ge=1024)  # request line + headers; more → 431 (localhost cookies add up)
    max_headers: int = Field(100, ge=8)  # header lines; more → 431 (browsers send ~20)
    header_timeout: float = Field(10.0, gt=0)  # seconds from connecting (or a new request's first byte) to its headers
    body_timeout: float = Field(10.0, gt=0)  # seconds a request body may stall between two packets
    max_concurrent_calls: int = Field(128, ge=1)  # tool calls in flight per caller (key, token subject); more → 429


WILDCARD_ADDRESSES = frozenset({"", "0.0.0.0", "::"})  # a host to bind every interface, not one to reach


class HubSettings(_Model):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    root_path: str = ""
    cors_origins: list[str] = Field(default_factory=list)
    # names the hub answers to besides loopback, IP literals, its own host and its instance url (DNS
    # rebinding → 421): exact names, "*.example.com", or "*" for any
    allowed_hosts: list[str] = Field(default_factory=list)
    public_docs: bool = True
    public_status: bool = True  # `/`, `/readyz`, `/metrics` name the servers to callers without a credential
    limits: HubLimits = Field(default_factory=HubLimits)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_arguments: bool = False  # log tool-call arguments (off: they may hold personal data)
    reload: bool = True  # watch the config file and apply changes without a restart
    mount: list[str] = Field(default_factory=list)  # names under remotes: to mount (config without instances:)
    # state several replicas share (rate limits): "redis://[:password@]host[:port][/db]" or rediss:// (TLS);
    # None: each hub keeps it in its own memory. Holds a password: never in a repr or log line (redacted_url)
    state: str | None = Field(None, repr=False)
    state_failure: Literal["open", "closed"] = "open"  # rate-limited calls while the state store is unreachable
    # where browsers reach the hub (scheme://host[:port][/prefix]): OAuth redirect URIs and connect links
    # (mcphub/oauth.py); None: http://{host}:{port}{root_path}
    public_url: str | None = None

    @property
    def local_url(self) -> str:
        """Where this hub's (first) listener is reached from this machine: a wildcard host as loopback."""
        host = "127.0.0.1" if self.host in WILDCARD_ADDRESSES else self.host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}{self.root_path}"

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str | None) -> str | None:
        if not value:
            return None
        if not re.match(r"^https?://[^/?#]+(/[^?#]*)?$", value):
            raise ValueError(f"must be an http:// or https:// URL without query (got {value!r})")
        return value.rstrip("/")

    @field_validator("state")
    @classmethod
    def _state(cls, value: str | None) -> str | None:
        if not value:
            return None  # `${REDIS_URL:-}` unset: memory
        try:
            parts = urlsplit(value)
            scheme, host, path, _port = parts.scheme, parts.hostname, parts.path.strip("/"), parts.port
        except ValueError:  # a port that is no number
            scheme, host, path = "", None, ""
        if scheme not in ("redis", "rediss") or not host:
            raise ValueError("must be a Redis URL such as 'redis://host:6379/0' or 'rediss://:password@host:6380/0' "
                             f"(got {redacted_url(value)!r})")
        if path and not path.isdigit():
            raise ValueError(f"the path must be a database number such as /0 (got {redacted_url(value)!r})")
        return value

    @field_validator("allowed_hosts")
    @classmethod
    def _allowed_hosts(cls, hosts: list[str]) -> list[str]:
        for host in hosts:
            if host != "*" and not _HOST_PATTERN.match(host):
                raise ValueError(f"{host!r} is not a host name: give a name such as 'tools.example.com', "
                                 "'*.example.com' or '*', without scheme, port or path")
        return [host.lower() for host in hosts]

    @field_validator("root_path")
    @classmethod
    def _root_path(cls, value: str) -> str:
        value = value.rstrip("/")
        if value and not value.startswith("/"):
            raise ValueError(f"must start with '/' (got {value!r})")
        return value


class RateLimit(_Model):
    """A token bucket: `requests` calls at once (the burst), refilled at `requests` per `per` seconds."""

    requests: int = Field(ge=1)
    per: float = Field(gt=0)  # seconds


class ForwardedUser(_Model):
    """How a front end that holds a key names the user it calls for (Open WebUI's forwarded user info):
    `jwt_secret`, its FORWARD_USER_INFO_HEADER_JWT_SECRET (an HS256 `X-OpenWebUI-User-Jwt`, `iss:
    open-webui`); `headers: true` also trusts the plain `X-OpenWebUI-User-Email` / `-Id` headers, which
    anyone holding the key can set (weaker)."""

    jwt_secret: str | None = Field(None, repr=False)
    headers: bool = False

    @model_validator(mode="after")
    def _some_way(self) -> ForwardedUser:
        if self.jwt_secret is None and not self.headers:
            raise ValueError("give 'jwt_secret' (Open WebUI's FORWARD_USER_INFO_HEADER_JWT_SECRET) or 'headers: true'")
        if self.jwt_secret is not None and not self.jwt_secret.strip():
            raise ValueError("'jwt_secret' is empty (is its ${VARIABLE} set?)")  # anyone could sign a user
        return self


class UserConfig(_Model):
    """What one forwarded user may do: narrows the key's scopes (the narrower wins); `rate_limit` replaces
    the key's, which each user otherwise gets a bucket of their own of."""

    servers: list[str] = Field(default_factory=lambda: ["*"])
    tools: list[str] | None = None
    rate_limit: RateLimit | None = None
    # NAME → value: what `${user.NAME}` in a server's env/headers is for this user (mcphub/user_servers.py)
    secrets: dict[str, str] = Field(default_factory=dict, repr=False)

    @field_validator("secrets")
    @classmethod
    def _secret_names(cls, secrets: dict[str, str]) -> dict[str, str]:
        for name in secrets:
            if not _SECRET_NAME.match(name):
                raise ValueError(f"secret name {name!r} must be letters, digits and '_', not starting with a digit "
                                 "(it is written ${user.NAME} in a server's env or headers)")
        return secrets


class ApiKey(_Model):
    name: str
    key: str | None = Field(None, repr=False)
    hash: str | None = None
    servers: list[str] = Field(default_factory=lambda: ["*"])
    tools: list[str] | None = None
    rate_limit: RateLimit | None = None  # this key's calls, over every server
    forwarded_user: ForwardedUser | None = None  # a front end names the user it calls for (see ForwardedUser)

    @field_validator("hash")
    @classmethod
    def _hash_format(cls, value: str | None) -> str | None:
        if value is not None and not _HASH.match(value):
            raise ValueError("must be 'sha256:' followed by 64 lowercase hex digits (see `mcphub keys new`)")
        return value

    @model_validator(mode="after")
    def _one_secret(self) -> ApiKey:
        if (self.key is None) == (self.hash is None):
            raise ValueError("give exactly one of 'key' or 'hash'")
        if self.key is not None and not self.key.strip():
            raise ValueError("'key' is empty (is its ${VARIABLE} set?)")
        return self

    @property
    def digest(self) -> str:
        """`sha256:<hex>` of the key, whichever way the config gave it."""
        if self.hash is not None:
            return self.hash
        assert self.key is not None
        return key_hash(self.key)

    def __repr__(self) -> str:  # never show the key
        return f"ApiKey(name={self.name!r}, servers={self.servers!r}, tools={self.tools!r})"


_HMAC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
_PUBLIC_KEY_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384",
                                    "ES512", "EdDSA"})


class JwtConfig(_Model):
    secret: str | None = Field(None, repr=False)  # HMAC shared secret (Open WebUI: WEBUI_SECRET_KEY)
    jwks_url: str | None = None  # or the identity provider's public keys
    algorithms: list[str] | None = None  # default: [HS256] with secret, [RS256, ES256] with jwks_url
    issuer: str | None = None  # when set, `iss` must equal it
    audience: str | None = None  # when set, `aud` must contain it
    # "claim=value" (or a bare value of the `scope`/`scp` claim) → the servers a token holding it may use.
    # Empty: every server. A token's own `mcphub_servers` / `mcphub_tools` claims narrow it further.
    scopes: dict[str, list[str]] = Field(default_factory=dict)
    require_exp: bool = True  # refuse tokens without `exp` (Open WebUI with JWT_EXPIRES_IN=-1 sends none)
    rate_limit: RateLimit | None = None  # per token subject

    @model_validator(mode="after")
    def _one_source(self) -> JwtConfig:
        if (self.secret is None) == (self.jwks_url is None):
            raise ValueError("give exactly one of 'secret' (shared-secret HMAC) or 'jwks_url'")
        if self.secret is not None and not self.secret.strip():
            # an empty HMAC secret would let anyone sign a token
            raise ValueError("'secret' is empty (is its ${VARIABLE} set?)")
        if self.jwks_url is not None and not re.match(r"^https?://", self.jwks_url):
            raise ValueError(f"'jwks_url' must be an http:// or https:// URL (got {self.jwks_url!r})")
        allowed = _HMAC_ALGORITHMS if self.secret is not None else _PUBLIC_KEY_ALGORITHMS
        for alg in self.algorithms or ():
            if alg not in allowed:  # also refuses 'none', and HS256 with public keys (algorithm confusion)
                source = "'secret'" if self.secret is not None else "'jwks_url'"
                raise ValueError(f"algorithm {alg!r} cannot be used with {source} "
                                 f"(use one of: {', '.join(sorted(allowed))})")
        if self.algorithms == []:
            raise ValueError("'algorithms' is empty: no token could be accepted")
        return self

    @property
    def accepted_algorithms(self) -> list[str]:
        if self.algorithms:
            return self.algorithms
        return ["HS256"] if self.secret is not None else ["RS256", "ES256"]

    def __repr__(self) -> str:
        return f"JwtConfig(jwks_url={self.jwks_url!r}, algorithms={self.accepted_algorithms!r})"


class AuthConfig(_Model):
    api_keys: list[ApiKey] = Field(default_factory=list)
    jwt: JwtConfig | None = None
    users: dict[str, UserConfig] = Field(default_factory=dict)  # forwarded users by email (else id)
    server_rate_limits: dict[str, RateLimit] = Field(default_factory=dict)  # server → shared by all callers

    @field_validator("api_keys")
    @classmethod
    def _unique_names(cls, keys: list[ApiKey]) -> list[ApiKey]:
        seen: set[str] = set()
        for key in keys:
            if key.name in seen:
                raise ValueError(f"two keys are named {key.name!r}")
            seen.add(key.name)
        return keys


class ToolFilter(_Model):
    allow: list[str] | None = None  # None: every tool
    deny: list[str] = Field(default_factory=list)

    def allows(self, tool: str) -> bool:
        return tool not in self.deny and (self.allow is None or tool in self.allow)


class RestartPolicy(_Model):
    policy: Literal["always", "never"] = "always"
    initial_delay: float = Field(0.5, gt=0)  # seconds before the first retry; doubles up to max_delay
    max_delay: float = Field(30.0, gt=0)


class _ServerBase(_Model):
    timeout: float = Field(60.0, gt=0)  # seconds per call → 504
    tool_timeouts: dict[str, float] = Field(default_factory=dict)
    job_timeout: float = Field(3600.0, gt=0)  # seconds per call run as a job or an event stream (mcphub/jobs.py)
    tool_job_timeouts: dict[str, float] = Field(default_factory=dict)
    tools: ToolFilter = Field(default_factory=ToolFilter)
    restart: RestartPolicy = Field(default_factory=RestartPolicy)
    replicas: int = Field(1, ge=1, le=32)
    required: bool = True  # /readyz is 503 while a required server is not ready
    mode: Literal["auto", "legacy"] = "auto"  # MCP handshake: auto probes the 2026 protocol first
    connect_timeout: float = Field(30.0, gt=0)  # seconds to connect, initialize and list tools
    proxy: str | None = None
    region: str | None = None
    description: str | None = None
    # send the caller's identity (key name or JWT subject, never a credential) to the server in each
    # call's `_meta` under this key, e.g. "io.mcphub/caller"; off by default
    forward_identity: str | None = None
    # a server whose env/headers use ${user.NAME} runs one instance per user (mcphub/user_servers.py):
    idle_timeout: float = Field(600.0, gt=0)  # seconds a user's instance may sit unused before it is stopped
    max_users: int = Field(16, ge=1, le=1024)  # user instances at once; the least recently used idle one makes room

    def timeout_for(self, tool: str) -> float:
        return self.tool_timeouts.get(tool, self.timeout)

    def job_timeout_for(self, tool: str) -> float:
        return self.tool_job_timeouts.get(tool, self.job_timeout)

    @field_validator("proxy")
    @classmethod
    def _proxy(cls, value: str | None) -> str | None:
        return _proxy_url(value)


class StdioServer(_ServerBase):
    transport: Literal["stdio"]
    command: str
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict, repr=False)
    cwd: str | None = None
    # auto: `python -m MODULE` on the hub's own interpreter is forked from `mcphub serve`'s preloaded
    # launcher (no SDK import per server); exec: always a fresh process
    launch: Literal["auto", "exec"] = "auto"

    def __repr__(self) -> str:  # env values are secrets
        return f"StdioServer(command={self.command!r}, args={self.args!r}, env=[{', '.join(self.env)}])"


class OAuthClient(_Model):
    """OAuth 2.1 to a remote MCP server, per user (mcphub/oauth.py). Endpoints not given are discovered
    (RFC 9728 protected-resource metadata, then RFC 8414); without `client_id` the hub registers itself
    (RFC 7591) where the authorization server offers it."""

    scopes: list[str] = Field(default_factory=list)
    client_id: str | None = None
    client_secret: str | None = Field(None, repr=False)
    authorization_endpoint: str | None = None
    token_endpoint: str | None = None
    revocation_endpoint: str | None = None
    resource: str | None = None  # RFC 8707 `resource`; default: the protected-resource metadata's, else the url
    client_name: str = "mcphub"  # what dynamic registration calls the hub

    @model_validator(mode="after")
    def _endpoints(self) -> OAuthClient:
        for name in ("authorization_endpoint", "token_endpoint", "revocation_endpoint", "resource"):
            value = getattr(self, name)
            if value is not None and not re.match(r"^https?://", value):
                raise ValueError(f"'{name}' must be an http:// or https:// URL (got {value!r})")
        if (self.authorization_endpoint is None) != (self.token_endpoint is None):
            raise ValueError("give both 'authorization_endpoint' and 'token_endpoint', or neither (discovered)")
        if self.client_secret is not None and self.client_id is None:
            raise ValueError("'client_secret' needs 'client_id'")
        return self

    def __repr__(self) -> str:
        return f"OAuthClient(scopes={self.scopes!r}, client_id={self.client_id!r})"


class HttpServer(_ServerBase):
    transport: Literal["streamable-http", "sse"]
    url: str
    headers: dict[str, str] = Field(default_factory=dict, repr=False)
    # seconds between health probes (MCP ping) while no call is in flight; 0 = off
    ping_interval: float = Field(30.0, ge=0)
    oauth: OAuthClient | None = None  # each user connects their own account (mcphub/oauth.py)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.match(r"^https?://", value):
            raise ValueError(f"must be an http:// or https:// URL (got {value!r})")
        return value

    def __repr__(self) -> str:  # header values are secrets
        return f"HttpServer(transport={self.transport!r}, url={self.url!r}, headers=[{', '.join(self.headers)}])"


ServerConfig = Annotated[StdioServer | HttpServer, Field(discriminator="transport")]


class InstanceConfig(_Model):
    host: str | None = None
    port: int | None = Field(None, ge=0, le=65535)
    servers: list[str] = Field(default_factory=list)
    mount: list[str] = Field(default_factory=list)  # other instances of this file, or names under remotes:
    url: str | None = None  # how other hubs reach this one when it runs in a process of its own
    auth: AuthConfig | None = None
    api_key: str | None = Field(None, repr=False)  # what siblings send it when it has an auth of its own

    def __repr__(self) -> str:
        return f"InstanceConfig(servers={self.servers!r}, mount={self.mount!r}, url={self.url!r})"


class RemoteHub(_Model):
    url: str
    api_key: str | None = Field(None, repr=False)
    proxy: str | None = None
    timeout: float = Field(60.0, gt=0)  # seconds per forwarded call → 504
    required: bool = False  # /readyz is 503 while a required remote is unreachable

    @field_validator("proxy")
    @classmethod
    def _proxy(cls, value: str | None) -> str | None:
        return _proxy_url(value)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.match(r"^https?://", value):
            raise ValueError(f"must be an http:// or https:// URL (got {value!r})")
        return value.rstrip("/")

    def __repr__(self) -> str:
        return f"RemoteHub(url={self.url!r})"


class RunnerConfig(_Model):
    backend: Literal["ollama", "openai"] = "ollama"
    base_url: str = "http://127.0.0.1:11434"
    api_key: str | None = Field(None, repr=False)  # a secret: never in a repr or log line
    model: str = "qwen3:14b"
    servers: list[str] = Field(default_factory=lambda: ["*"])
    max_steps: int = Field(8, ge=1, le=64)
    max_result_chars: int = Field(16000, ge=256)
    timeout: float = Field(120.0, gt=0)
    num_ctx: int | None = Field(None, ge=256)  # ollama: context window sent as options.num_ctx


class JobsConfig(_Model):
    """Calls run as jobs (`Prefer: respond-async`; mcphub/jobs.py)."""

    ttl: float = Field(3600.0, gt=0)  # seconds a finished job stays readable; then 404
    max_running_per_key: int = Field(32, ge=1)  # running jobs per caller (key, token subject); more → 429


class HubConfig(_Model):
    hub: HubSettings = Field(default_factory=HubSettings)
    jobs: JobsConfig = Field(default_factory=JobsConfig)
    auth: AuthConfig = Field(default_factory=AuthConfig)
    servers: dict[str, ServerConfig] = Field(default_factory=dict)
    instances: dict[str, InstanceConfig] = Field(default_factory=dict)
    remotes: dict[str, RemoteHub] = Field(default_factory=dict)
    runner: RunnerConfig | None = None

    @field_validator("servers")
    @classmethod
    def _server_names(cls, servers: dict[str, StdioServer | HttpServer]) -> dict[str, StdioServer | HttpServer]:
        for name in servers:
            if not SERVER_NAME.match(name):
                raise ValueError(
                    "a server name must be 1-48 characters of letters, digits, '_' or '-', "
                    f"starting with a letter or digit, as it becomes a URL path segment (got {name!r})"
                )
        return servers


def redacted_url(url: str) -> str:
    """`url` as a log line or message may show it: any password (or user) replaced by '***'."""
    head, sep, rest = url.partition("://")
    if not sep:
        return "***" if "@" in url else url
    netloc, slash, tail = rest.partition("/")
    if "@" in netloc:
        netloc = "***@" + netloc.rpartition("@")[2]
    return f"{head}://{netloc}{slash}{tail}"


def _proxy_url(value: str | None) -> str | None:
    """An empty proxy (`${HTTPS_PROXY:-}` unset) means none."""
    if value is None or not value.strip():
        return None
    if not re.match(r"^(https?|socks5h?)://", value):
        raise ValueError(f"must be an http://, https:// or socks5:// URL (got {value!r})")
    return value


def key_hash(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode("utf-8")).hexdigest()


# ---------------------------------------------------------------------------------------------- loading


def default_config_path() -> Path:
    """`./mcphub.yaml` if there is one, else the packaged default that serves the bundled servers."""
    local = Path(DEFAULT_CONFIG_NAME)
    if local.is_file():
        return local
    return Path(str(resources.files("mcphub").joinpath("default.yaml")))


def load_config(path: str | os.PathLike[str], *, environ: Mapping[str, str] | None = None) -> HubConfig:
    """Read, expand and validate a config file. Raises ConfigError naming file, dotted path and value."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    env = dict(environ if environ is not None else os.environ)
    for name, value in _read_dotenv(path.parent / ".env").items():
        env.setdefault(name, value)
    return parse_config(text, source=str(path), environ=env)


def parse_config(text: str, *, source: str = "<config>", environ: Mapping[str, str] | None = None) -> HubConfig:
    try:
        raw = yaml.safe_load(text) if text.strip() else {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{source}: not valid YAML or JSON{where}: {problem}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the top level must be a mapping, got {type(raw).__name__}")
    raw = _expand(raw, environ if environ is not None else os.environ, source, ())
    _check_user_placeholders(raw, source, ())
    adapted: frozenset[str] = frozenset()
    if "mcpServers" in raw:
        own = set(raw.get("servers") or ())
        raw = _from_mcp_servers(raw, source)
        adapted = frozenset(raw["servers"]) - own
    try:
        config = HubConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source, raw, adapted)) from None
    _check_references(config, source)
    return config


@overload
def _expand(value: dict[str, Any], environ: Mapping[str, str], source: str,
            path: tuple[str | int, ...]) -> dict[str, Any]: ...
@overload
def _expand(value: object, environ: Mapping[str, str], source: str, path: tuple[str | int, ...]) -> object: ...


def _expand(value: object, environ: Mapping[str, str], source: str, path: tuple[str | int, ...]) -> object:
    """`value` with `${VAR}` expanded in every string inside it; same shape (a mapping stays a mapping)."""
    if isinstance(value, dict):
        return {k: _expand(v, environ, source, (*path, str(k))) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, environ, source, (*path, i)) for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value

    def substitute(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        found = environ.get(name)
        if found is not None and (found != "" or default is None):
            return found
        if default is not None:
            return default
        raise ConfigError(
            f"{source}: {_dotted(path)}: environment variable {name} is not set "
            f"(set it, put it in a .env file beside the config, or write ${{{name}:-default}})"
        )

    return _VAR.sub(substitute, value)


_USER_PLACES = ("env", "headers")  # where ${user.NAME} can work: a server's child env, its HTTP headers


def _check_user_placeholders(value: object, source: str, path: tuple[str | int, ...]) -> None:
    """`${user.NAME}` only in the values of a server's `env` (stdio) or `headers` (sse / streamable-http):
    anywhere else it could not be filled in per user, so it is an error that says where it can go."""
    if isinstance(value, dict):
        for k, v in value.items():
            if isinstance(k, str) and _USER_PLACEHOLDER.search(k):
                raise ConfigError(f"{source}: {_dotted(path)}: ${{user.…}} cannot be a key (got {k!r}); "
                                  "use it as a value of a server's env or headers")
            _check_user_placeholders(v, source, (*path, str(k)))
        return
    if isinstance(value, list):
        for i, v in enumerate(value):
            _check_user_placeholders(v, source, (*path, i))
        return
    if not isinstance(value, str) or not _USER_PLACEHOLDER.search(value):
        return
    where = _dotted(path)
    if _USER_PLACEHOLDER.search(USER_SECRET.sub("", value)):
        raise ConfigError(f"{source}: {where}: malformed user secret placeholder in {value!r}: write "
                          "${user.NAME}, NAME being letters, digits and '_'")
    in_place = len(path) == 4 and path[0] in ("servers", "mcpServers") and path[2] in _USER_PLACES
    if in_place:
        return
    if len(path) >= 3 and path[0] in ("servers", "mcpServers"):
        hint = {"url": "put the secret in a header instead (headers: {Authorization: \"Bearer ${user.NAME}\"})",
                "command": "pass it in env: (env: {TOKEN: \"${user.NAME}\"}) and let the server read it",
                "args": "pass it in env: (env: {TOKEN: \"${user.NAME}\"}) and let the server read it; "
                        "arguments are visible to every user of the machine (ps)"}.get(
                    str(path[2]), "use it in the server's env (stdio) or headers (sse / streamable-http)")
    else:
        hint = "it means the calling user's secret, so it works only in a server's env or headers"
    raise ConfigError(f"{source}: {where}: ${{user.…}} (the calling user's secret) cannot be used here, only in "
                      f"the values of a server's env (stdio) or headers (sse / streamable-http); {hint}")


def _read_dotenv(path: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    values: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        name, _, value = line.removeprefix("export ").partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        values[name.strip()] = value
    return values


_MCP_TRANSPORTS = {
    "stdio": "stdio",
    "sse": "sse",
    "streamable-http": "streamable-http",
    "streamable_http": "streamable-http",
    "streamablehttp": "streamable-http",
    "http": "streamable-http",
}


def _from_mcp_servers(raw: dict[str, Any], source: str) -> dict[str, Any]:
    """Claude-Desktop / mcpo files: lenient about spellings, as those tools are; strict about the rest."""
    entries = raw.get("mcpServers")
    if not isinstance(entries, dict):
        raise ConfigError(f"{source}: mcpServers: must be a mapping of server name to settings")
    servers: dict[str, Any] = {}
    for name, entry in entries.items():
        where = f"{source}: mcpServers.{name}"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}: must be a mapping")
        if entry.get("disabled") is True:
            continue
        kind = str(entry.get("type") or entry.get("transport") or "").lower()
        if kind and kind not in _MCP_TRANSPORTS:
            raise ConfigError(f"{where}.type: unknown transport {kind!r} (use stdio, sse or streamable-http)")
        server: dict[str, Any] = {}
        if "url" in entry and kind != "stdio":
            url = str(entry["url"])
            sniffed = "sse" if url.rstrip("/").endswith("/sse") else "streamable-http"  # as mcpo does
            server["transport"] = _MCP_TRANSPORTS.get(kind) or sniffed
            server["url"] = url
            if entry.get("headers"):
                server["headers"] = entry["headers"]
        elif "command" in entry:
            server["transport"] = "stdio"
            server["command"] = entry["command"]
            for field in ("args", "env", "cwd"):
                if entry.get(field) is not None:
                    server[field] = entry[field]
        else:
            raise ConfigError(f"{where}: needs 'command' (stdio) or 'url' (sse / streamable-http)")
        if entry.get("disabledTools"):
            server["tools"] = {"deny": list(entry["disabledTools"])}
        if entry.get("timeout") is not None:
            server["timeout"] = entry["timeout"]
        servers[name] = server
    converted = {k: v for k, v in raw.items() if k != "mcpServers"}
    converted["servers"] = {**servers, **converted.get("servers", {})}
    return converted


def _describe(exc: ValidationError, source: str, raw: object, adapted: frozenset[str] = frozenset()) -> str:
    """One line per error. `adapted`: servers that came from `mcpServers`, named as the file names them."""
    lines = []
    for error in exc.errors(include_url=False):
        loc = [part for part in error["loc"] if not _is_union_tag(part)]
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown field (check the spelling; see config/example.yaml for every field)"
        elif error["type"] == "union_tag_invalid":
            loc.append("transport")
            message = "must be one of: stdio, streamable-http, sse"
        elif error["type"] == "union_tag_not_found":
            message = "missing 'transport' (one of: stdio, streamable-http, sse)"
        value = _lookup(raw, loc)
        hidden = value is _MISSING or _is_secret_path(loc) or "(got " in message  # a validator named it
        shown = "" if hidden else f" (got {_short(_redact(value))})"
        if len(loc) > 1 and loc[0] == "servers" and loc[1] in adapted:
            loc[0] = "mcpServers"
        lines.append(f"{source}: {_dotted(loc)}: {message}{shown}")
    return "\n".join(lines)


_MISSING = object()


def _is_union_tag(part: str | int) -> bool:
    return part in ("stdio", "streamable-http", "sse") or (isinstance(part, str) and part.startswith("function-"))


_SECRET_FIELDS = ("key", "secret", "env", "headers", "api_key", "client_secret")


def _is_secret_path(loc: Sequence[str | int]) -> bool:
    return any(str(p) in _SECRET_FIELDS for p in loc)


def _redact(value: object) -> object:
    """A value as it may be shown: secrets inside it (an api key, an env or headers mapping) masked."""
    if isinstance(value, dict):
        return {k: "***" if str(k) in _SECRET_FIELDS else _redact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact(v) for v in value]
    return value


def _lookup(raw: object, loc: Sequence[str | int]) -> object:
    for part in loc:
        if isinstance(raw, dict) and part in raw:
            raw = raw[part]
        elif isinstance(raw, list) and isinstance(part, int) and part < len(raw):
            raw = raw[part]
        else:
            return _MISSING
    return raw


def _short(value: object) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


def _dotted(path: Sequence[str | int]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _check_references(config: HubConfig, source: str) -> None:
    """Names that must point at something that exists. (Key scopes may name servers of a mounted hub,
    which this file cannot know, so they are not checked here.)"""
    known = set(config.servers)
    for target in config.hub.mount:
        if target not in config.remotes:
            raise ConfigError(f"{source}: hub.mount: {target!r} is not under remotes: "
                              f"(remotes: {', '.join(sorted(config.remotes)) or 'none'})")
    for name, inst in config.instances.items():
        for server in inst.servers:
            if server not in known:
                raise ConfigError(
                    f"{source}: instances.{name}.servers: no server named {server!r} "
                    f"(servers: {', '.join(sorted(known)) or 'none'})"
                )
        for target in inst.mount:
            if target == name:
                raise ConfigError(f"{source}: instances.{name}.mount: an instance cannot mount itself")
            if target not in config.instances and target not in config.remotes:
                raise ConfigError(
                    f"{source}: instances.{name}.mount: {target!r} is neither an instance nor a remote "
                    f"(instances: {', '.join(sorted(config.instances))}; "
                    f"remotes: {', '.join(sorted(config.remotes)) or 'none'})"
                )
    _check_mount_loops(config, source)
    for name in config.instances:
        _check_instance_names(config, name, source)


def _check_mount_loops(config: HubConfig, source: str) -> None:
    def visit(name: str, path: list[str]) -> None:
        if name in path:
            loop = " → ".join([*path[path.index(name):], name])
            raise ConfigError(f"{source}: instances: mount loop {loop}: a hub would serve its own tools back "
                              "to itself; remove one of the mounts")
        for target in config.instances[name].mount:
            if target in config.instances:
                visit(target, [*path, name])

    for name in config.instances:
        visit(name, [])


def instance_servers(config: HubConfig, name: str) -> dict[str, str]:
    """Every server an instance serves, local or from mounted sibling instances (transitively):
    server name → the instance it runs in. Remotes are not included: their names are known at run time."""
    found: dict[str, str] = {}
    inst = config.instances[name]
    for server in inst.servers:
        found[server] = name
    for target in inst.mount:
        if target in config.instances:
            found.update({s: owner for s, owner in instance_servers(config, target).items() if s not in found})
    return found


def _check_instance_names(config: HubConfig, name: str, source: str) -> None:
    seen: dict[str, str] = {}
    inst = config.instances[name]
    sources = [(name, inst.servers)] + [
        (t, list(instance_servers(config, t))) for t in inst.mount if t in config.instances
    ]
    for origin, servers in sources:
        for server in servers:
            if server in seen and seen[server] != origin:
                raise ConfigError(
                    f"{source}: instances.{name}: two servers named {server!r}: one from instance "
                    f"{seen[server]!r}, one from instance {origin!r}; rename one of them"
                )
            seen.setdefault(server, origin)
