"""The `mcphub` command line, run as a user runs it: `python -m mcphub ...` in a subprocess.

Exit codes: 0 ok; 1 the command ran and found a problem; 2 bad config or arguments, with one message
naming the file, dotted path and value, and never a traceback.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import socket
import subprocess
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx2
import psutil
import pytest
import yaml

from mcphub.config import parse_config
from tests.helpers import PYTHON, REPO, free_port
from tests.hub import assert_error, sample_server

CLI_TIMEOUT = 60  # seconds for one short command (starts a server or two, ~1 s each)
SERVE_START_TIMEOUT = 60  # seconds for `serve` to answer /healthz (every server starts first)
STOP_TIMEOUT = 20  # seconds for `serve` to exit after SIGTERM (servers get a 5 s grace each, in parallel)
BUNDLED = ("time", "weather", "arxiv", "github", "searxng")
KEY = "cli-test-key-0123456789"
UPSTREAM_VARS = ("OPEN_METEO_BASE_URL", "OPEN_METEO_GEOCODING_URL", "AMAP_MAPS_API_KEY", "ARXIV_API_URL",
                 "GITHUB_API_URL", "GITHUB_PERSONAL_ACCESS_TOKEN", "SEARXNG_URL", "TIME_LOCAL_TIMEZONE")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "MCPHUB_API_KEY" and k not in UPSTREAM_VARS}
    env["COLUMNS"] = "200"  # rich tables: one row per line
    env.update(extra)
    return env


def mcphub(*args: str, cwd: Path = REPO, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PYTHON, "-m", "mcphub", *args], cwd=cwd, env=env or _env(), capture_output=True,
                          text=True, encoding="utf-8", timeout=CLI_TIMEOUT)


def _output(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"


def _no_traceback(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stdout + result.stderr, _output(result)


def _config(tmp_path: Path, raw: dict[str, Any] | str, name: str = "hub.yaml") -> Path:
    path = tmp_path / name
    path.write_text(raw if isinstance(raw, str) else yaml.safe_dump(raw), encoding="utf-8")
    return path


def _sample(**overrides: Any) -> dict[str, Any]:
    """The sample server with only its plain tools."""
    return sample_server(tools={"allow": ["add", "echo", "fail"]}, **overrides)


def _row(stdout: str, server: str) -> str:
    rows = [line for line in stdout.splitlines() if re.search(rf"\b{re.escape(server)}\b", line) and "│" in line]
    assert rows, stdout
    return rows[0]


# ------------------------------------------------------------------------------------------------ help


@pytest.mark.parametrize("args", [["--help"], ["serve", "--help"], ["check", "--help"], ["tools", "--help"],
                                  ["call", "--help"], ["keys", "new", "--help"]], ids=" ".join)
def test_help_exits_0(args: list[str]) -> None:
    result = mcphub(*args)
    assert result.returncode == 0, _output(result)
    assert result.stdout.startswith("usage: mcphub"), _output(result)


def test_serve_help_shows_the_one_server_form() -> None:
    result = mcphub("serve", "--help")
    assert "-- CMD ARG..." in result.stdout and "--api-key" in result.stdout and "--allow-no-auth" in result.stdout


# ------------------------------------------------------------------------------- bad config: exit 2


@pytest.mark.parametrize("command", [["check"], ["tools"], ["serve"], ["call", "sample", "add"]], ids=" ".join)
def test_bad_config_exits_2_with_one_message_naming_file_path_and_value(tmp_path: Path, command: list[str]) -> None:
    path = _config(tmp_path, {"servers": {"sample": {"transport": "stdio", "command": "uvx", "arg": ["x"]}}})
    result = mcphub(*command, "-c", str(path))
    assert result.returncode == 2, _output(result)
    _no_traceback(result)
    assert result.stdout == "", _output(result)
    assert result.stderr == (f'mcphub: {path}: servers.sample.arg: unknown field (check the spelling; see '
                             f'config/example.yaml for every field) (got ["x"])\n'), _output(result)


def test_unknown_transport_exits_2_naming_the_value(tmp_path: Path) -> None:
    path = _config(tmp_path, {"servers": {"clock": {"transport": "websocket", "command": "x"}}})
    result = mcphub("check", "-c", str(path))
    assert result.returncode == 2, _output(result)
    _no_traceback(result)
    assert result.stderr.strip() == (f'mcphub: {path}: servers.clock.transport: must be one of: stdio, '
                                     f'streamable-http, sse (got "websocket")'), _output(result)


def test_a_missing_variable_exits_2_naming_it_and_not_any_secret(tmp_path: Path) -> None:
    path = _config(tmp_path, "auth:\n  api_keys: [{name: a, key: '${OWUI_KEY}'}]\n"
                             "servers:\n  gh: {transport: stdio, command: x, env: {T: '${GITHUB_TOKEN}'}}\n")
    result = mcphub("tools", "-c", str(path), env=_env(OWUI_KEY="s3cr3t-owui-value"))
    assert result.returncode == 2, _output(result)
    _no_traceback(result)
    assert "servers.gh.env.T: environment variable GITHUB_TOKEN is not set" in result.stderr, _output(result)
    assert "s3cr3t-owui-value" not in result.stdout + result.stderr


def test_a_missing_config_file_exits_2(tmp_path: Path) -> None:
    result = mcphub("check", "-c", str(tmp_path / "nope.yaml"))
    assert result.returncode == 2, _output(result)
    _no_traceback(result)
    assert result.stderr.strip() == f"mcphub: {tmp_path / 'nope.yaml'}: no such file"


def test_invalid_yaml_exits_2_with_line_and_column(tmp_path: Path) -> None:
    path = _config(tmp_path, "servers:\n  a: {transport: stdio\n  b: 1\n")
    result = mcphub("check", "-c", str(path))
    assert result.returncode == 2, _output(result)
    _no_traceback(result)
    assert re.fullmatch(rf"mcphub: {re.escape(str(path))}: not valid YAML or JSON \(line 3, column \d+\): .+\n",
                        result.stderr), _output(result)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "required: COMMAND"),
        (["serve", "--bogus"], "unrecognized arguments: --bogus"),
        (["serve", "--port", "eighty"], "argument --port: not a port number: 'eighty'"),
        (["serve", "--port", "99999"], "argument --port: a port is 0-65535, got 99999"),
        (["call", "sample"], "required: tool"),
        (["keys"], "new       print a fresh key"),
        (["serve", "--log-level", "loud"], "argument --log-level: invalid choice: 'loud'"),
    ],
    ids=["no command", "unknown option", "port not a number", "port out of range", "call without tool",
         "keys without subcommand", "bad log level"],
)
def test_bad_arguments_exit_2_with_usage_and_no_traceback(args: list[str], message: str) -> None:
    result = mcphub(*args)
    assert result.returncode == 2, _output(result)
    _no_traceback(result)
    assert "usage: mcphub" in result.stderr and message in result.stderr, _output(result)


def test_an_unknown_instance_exits_2_naming_it(tmp_path: Path) -> None:
    path = _config(tmp_path, {"servers": {"sample": _sample()}, "instances": {"cn": {"servers": ["sample"]}}})
    result = mcphub("serve", "-c", str(path), "--instance", "global")
    assert result.returncode == 2, _output(result)
    _no_traceback(result)
    assert result.stderr.strip() == f"mcphub: {path}: --instance 'global': no such instance (instances: cn)"


def test_one_port_for_several_instances_exits_2(tmp_path: Path) -> None:
    path = _config(tmp_path, {"servers": {"sample": _sample()},
                              "instances": {"cn": {"servers": ["sample"], "port": 18001},
                                            "global": {"port": 18002, "mount": ["cn"]}}})
    result = mcphub("serve", "-c", str(path), "--port", "18003")
    assert result.returncode == 2, _output(result)
    _no_traceback(result)
    assert "runs 2 instances (cn, global); add --instance NAME" in result.stderr, _output(result)


def test_a_config_file_and_a_command_together_exit_2(tmp_path: Path) -> None:
    path = _config(tmp_path, {"servers": {"sample": _sample()}})
    result = mcphub("serve", "-c", str(path), "--", PYTHON, "-m", "tests.mcp_servers.sample")
    assert result.returncode == 2, _output(result)
    _no_traceback(result)
    assert "give either -c FILE or -- CMD ARG..., not both" in result.stderr


# ------------------------------------------------------------------------------------------- check


def test_check_with_a_healthy_server_exits_0_and_shows_the_table(tmp_path: Path) -> None:
    path = _config(tmp_path, {"servers": {"sample": _sample()}})
    result = mcphub("check", "-c", str(path))
    assert result.returncode == 0, _output(result)
    row = _row(result.stdout, "sample")
    assert "stdio" in row and "ready" in row and "add, echo, fail" in row, result.stdout
    assert f"{path}: 1 server ready, schemas lint clean" in result.stdout


def test_check_with_a_missing_command_exits_1_naming_it_and_the_other_server_is_ready(tmp_path: Path) -> None:
    path = _config(tmp_path, {"servers": {
        "sample": _sample(),
        "ghost": {"transport": "stdio", "command": "no-such-mcp-server-xyz", "restart": {"policy": "never"}},
    }})
    result = mcphub("check", "-c", str(path))
    assert result.returncode == 1, _output(result)
    _no_traceback(result)
    assert "ready" in _row(result.stdout, "sample"), result.stdout
    assert "failed" in _row(result.stdout, "ghost"), result.stdout
    problems = [line for line in result.stdout.splitlines() if line.startswith("✗")]
    assert len(problems) == 1 and "ghost" in problems[0] and "no-such-mcp-server-xyz" in problems[0], result.stdout
    assert f"{path}: 1 problem, 0 warnings; -v shows each server's stderr" in result.stdout


LONG_DESCRIPTION_SERVER = """
from mcp.server.mcpserver import MCPServer
server = MCPServer("wordy")
@server.tool(description="Explain. " * 130)
def explain() -> str:
    return "ok"
server.run()
"""


def test_check_warns_on_a_description_openai_would_reject_and_strict_fails(tmp_path: Path) -> None:
    path = _config(tmp_path, {"servers": {
        "sample": sample_server(),  # the sample's definitions, some over 400 characters, are fine
        "wordy": {"transport": "stdio", "command": "python", "args": ["-c", LONG_DESCRIPTION_SERVER]},
    }})
    result = mcphub("check", "-c", str(path))
    assert result.returncode == 0, _output(result)
    warnings = [line for line in result.stdout.splitlines() if line.startswith("⚠")]
    assert warnings == ["⚠ wordy/explain: description is 1170 characters; OpenAI's API rejects a function "
                        "description over 1024, and a chat through a backend that enforces it fails whole"], \
        result.stdout
    assert result.stdout.rstrip().endswith(", 1 warning"), result.stdout
    strict = mcphub("check", "--strict", "-c", str(path))
    assert strict.returncode == 1, _output(strict)
    assert strict.stdout.rstrip().endswith(f"{path}: 0 problems, 1 warning"), strict.stdout


def test_check_strict_passes_on_the_packaged_default(tmp_path: Path) -> None:
    result = mcphub("check", "--strict", cwd=tmp_path)  # no ./mcphub.yaml: the packaged default
    assert result.returncode == 0, _output(result)
    assert result.stdout.rstrip().endswith("default.yaml: 5 servers ready, schemas lint clean"), _output(result)
    assert result.stderr == "", _output(result)
    # long definitions are noted (PRODUCT.md's 400-character lint), not counted, not even by --strict
    assert "note: time/convert_time: tool definition is " in result.stdout, _output(result)
    assert "characters, over 400" in result.stdout, _output(result)


def test_check_warns_on_keys_scoped_to_servers_that_do_not_exist_and_strict_fails(tmp_path: Path) -> None:
    path = _config(tmp_path, {
        "auth": {"api_keys": [{"name": "ci", "key": KEY, "servers": ["sample", "smaple"]},
                              {"name": "all", "key": KEY + "x"}],
                 "jwt": {"secret": "s" * 32, "scopes": {"role=ops": ["ghost"]}}},
        "servers": {"sample": _sample()}})
    result = mcphub("check", "-c", str(path))
    assert result.returncode == 0, _output(result)
    warnings = [line for line in result.stdout.splitlines() if line.startswith("⚠")]
    assert warnings == [
        f"⚠ {path}: auth.api_keys[0] ('ci'): no server named 'smaple', so it opens nothing there (servers: sample)",
        f"⚠ {path}: auth.jwt.scopes['role=ops']: no server named 'ghost', so it opens nothing there (servers: sample)",
    ], result.stdout
    strict = mcphub("check", "--strict", "-c", str(path))
    assert strict.returncode == 1 and strict.stdout.rstrip().endswith("0 problems, 2 warnings"), _output(strict)


def test_check_warns_on_a_config_without_servers(tmp_path: Path) -> None:
    path = _config(tmp_path, "{}")
    result = mcphub("check", "-c", str(path))
    assert result.returncode == 0, _output(result)
    assert f"⚠ {path}: no servers configured; add one under servers:, e.g. time: " in result.stdout, result.stdout
    assert result.stdout.rstrip().endswith(f"{path}: 0 servers ready, schemas lint clean, 1 warning"), result.stdout
    assert mcphub("check", "--strict", "-c", str(path)).returncode == 1


# ---------------------------------------------------------------------- stdout holds results only


@pytest.mark.parametrize("command", [["check"], ["tools"], ["call", "sample", "add", "--args", '{"a": 1, "b": 2}']],
                         ids=lambda c: c[0])
def test_result_commands_log_only_warnings_to_stderr_unless_verbose(tmp_path: Path, command: list[str]) -> None:
    path = _config(tmp_path, {"servers": {"sample": _sample()}})
    quiet = mcphub(*command, "-c", str(path))
    assert quiet.returncode == 0, _output(quiet)
    assert quiet.stderr == "", _output(quiet)
    assert " INFO " not in quiet.stdout and "starting 'sample'" not in quiet.stdout, _output(quiet)
    verbose = mcphub(*command, "-c", str(path), "-v")
    assert verbose.returncode == 0, _output(verbose)
    assert "INFO    mcphub.supervisor: starting 'sample'" in verbose.stderr, _output(verbose)
    assert verbose.stdout == quiet.stdout or command[0] != "call", _output(verbose)


def test_a_failed_server_is_one_line_in_the_table_when_piped_and_its_stderr_goes_to_stderr_with_v(
        tmp_path: Path) -> None:
    long_line = "x" * 300
    path = _config(tmp_path, {"servers": {"broken": {
        "transport": "stdio", "command": "python", "restart": {"policy": "never"},
        "args": ["-c", f"import sys; print('first line', file=sys.stderr); print('{long_line}', file=sys.stderr)"],
    }}})
    result = mcphub("tools", "-c", str(path), "-v", env=_env(COLUMNS="80"))
    assert result.returncode == 1, _output(result)
    (row,) = [line for line in result.stdout.splitlines() if "broken" in line]
    assert "see its stderr in the hub's log" in row, result.stdout  # last_error: the hub's words only (#17)
    assert long_line not in result.stdout and long_line in result.stderr, _output(result)
    assert len([line for line in result.stdout.splitlines() if line.startswith("│")]) == 1, result.stdout


# ------------------------------------------------------------------------------------------- tools


def test_tools_lists_every_tool_of_the_sample_server(tmp_path: Path) -> None:
    path = _config(tmp_path, {"servers": {"sample": sample_server()}})
    result = mcphub("tools", "-c", str(path))
    assert result.returncode == 0, _output(result)
    _, _, _, state, count, detail, _ = _row(result.stdout, "sample").split("│")
    tools = detail.strip().split(", ")
    assert state.strip() == "ready" and int(count) == len(tools), result.stdout
    assert tools == sorted(tools) and {"add", "echo", "fail", "order", "mixed", "crash"} <= set(tools), result.stdout


def test_tools_leaves_out_denied_tools(tmp_path: Path) -> None:
    path = _config(tmp_path, {"servers": {"sample": sample_server(tools={"deny": ["crash", "fail"]})}})
    result = mcphub("tools", "-c", str(path))
    assert result.returncode == 0, _output(result)
    tools = set(_row(result.stdout, "sample").split("│")[5].strip().split(", "))
    assert {"add", "echo", "mixed"} <= tools and not {"crash", "fail"} & tools, result.stdout


def test_tools_exits_1_when_a_server_fails(tmp_path: Path) -> None:
    path = _config(tmp_path, {"servers": {"sample": _sample(env={"SAMPLE_START": "fail"},
                                                            restart={"policy": "never"})}})
    result = mcphub("tools", "-c", str(path))
    assert result.returncode == 1, _output(result)
    _no_traceback(result)
    assert "failed" in _row(result.stdout, "sample"), result.stdout


# -------------------------------------------------------------------------------------------- call


@pytest.fixture
def sample_config(tmp_path: Path) -> Path:
    return _config(tmp_path, {"servers": {"sample": sample_server()}})


def test_call_prints_the_result_as_json(sample_config: Path) -> None:
    result = mcphub("call", "sample", "add", "--args", '{"a": 2, "b": 3}', "-c", str(sample_config))
    assert result.returncode == 0, _output(result)
    assert json.loads(result.stdout) == {"total": 5, "operands": [2, 3]}


def test_call_of_a_failing_tool_exits_1_and_prints_the_error_shape(sample_config: Path) -> None:
    result = mcphub("call", "sample", "fail", "--args", '{"message": "the disk is full"}', "-c", str(sample_config))
    assert result.returncode == 1, _output(result)
    _no_traceback(result)
    body = json.loads(result.stdout)
    assert set(body) == {"error"}
    error = body["error"]
    assert (error["type"], error["server"], error["tool"]) == ("tool_error", "sample", "fail")
    assert "the disk is full" in error["message"]


def test_call_with_arguments_breaking_the_schema_exits_1_with_the_validation_errors(sample_config: Path) -> None:
    result = mcphub("call", "sample", "add", "--args", '{"a": "two"}', "-c", str(sample_config))
    assert result.returncode == 1, _output(result)
    error = json.loads(result.stdout)["error"]
    assert error["type"] == "invalid_arguments" and error["errors"], error


def test_call_of_an_unknown_server_exits_2_naming_it(sample_config: Path) -> None:
    result = mcphub("call", "nope", "add", "-c", str(sample_config))
    assert result.returncode == 2, _output(result)
    _no_traceback(result)
    assert result.stderr.strip() == f"mcphub: {sample_config}: no server named 'nope' (servers: sample)"


@pytest.mark.parametrize(("args", "message"), [
    ('{"a": 2,', "--args: not valid JSON"),
    ("a=2", "--args: not valid JSON"),
    ("[2, 3]", "--args: must be a JSON object of the tool's arguments (got [2, 3])"),
], ids=["truncated", "not json", "array"])
def test_call_with_bad_args_json_exits_2(sample_config: Path, args: str, message: str) -> None:
    result = mcphub("call", "sample", "add", "--args", args, "-c", str(sample_config))
    assert result.returncode == 2, _output(result)
    _no_traceback(result)
    assert result.stdout == "" and result.stderr.startswith(f"mcphub: {message}"), _output(result)


# -------------------------------------------------------------------------------------------- keys


def _new_key(*args: str) -> tuple[str, dict[str, Any], str]:
    result = mcphub("keys", "new", *args)
    assert result.returncode == 0, _output(result)
    (key,) = re.findall(r"^key \(shown once, give it to the client\): (\S+)$", result.stdout, re.MULTILINE)
    (line,) = [line for line in result.stdout.splitlines() if line.lstrip().startswith("- ")]
    return key, yaml.safe_load(line.lstrip()[2:]), line


def test_keys_new_prints_a_key_and_a_config_line_holding_only_its_sha256() -> None:
    key, entry, line = _new_key("--name", "ci", "--servers", "time")
    assert len(key) >= 32
    assert entry == {"name": "ci", "hash": "sha256:" + hashlib.sha256(key.encode("utf-8")).hexdigest(),
                     "servers": ["time"]}
    assert key not in line

    config = parse_config(f"auth:\n  api_keys:\n{line}\n", source="pasted", environ={})
    (api_key,) = config.auth.api_keys
    assert (api_key.name, api_key.servers, api_key.tools) == ("ci", ["time"], None)
    assert api_key.digest == entry["hash"]


def test_keys_new_scopes_tools_and_several_servers() -> None:
    _, entry, line = _new_key("--name", "bot", "--servers", "time, weather", "--tools", "get_current_time")
    (api_key,) = parse_config(f"auth:\n  api_keys:\n{line}\n", environ={}).auth.api_keys
    assert (api_key.servers, api_key.tools) == (["time", "weather"], ["get_current_time"])


def test_keys_new_gives_a_fresh_key_each_time() -> None:
    assert _new_key()[0] != _new_key()[0]


@pytest.mark.parametrize(("option", "value"), [("--servers", ","), ("--servers", ""), ("--tools", " , ")])
def test_keys_new_refuses_an_empty_list_instead_of_opening_everything(option: str, value: str) -> None:
    result = mcphub("keys", "new", option, value)
    assert result.returncode == 2, _output(result)
    assert result.stdout == "", _output(result)  # no key was made
    assert result.stderr == (f"mcphub: {option} {value!r}: no names in it; give them separated by commas "
                             f"({option} a,b), or leave {option} out for all\n"), _output(result)


def test_keys_without_a_subcommand_prints_its_help() -> None:
    result = mcphub("keys")
    assert result.returncode == 2, _output(result)
    assert result.stderr.startswith("usage: mcphub keys [-h] SUBCOMMAND ..."), _output(result)
    assert "new       print a fresh key and the config line" in result.stderr, _output(result)
    assert "required" not in result.stderr, _output(result)


# ------------------------------------------------------------------------------------------- serve


@dataclass
class Served:
    process: subprocess.Popen[bytes]
    client: httpx2.AsyncClient
    descendants: list[psutil.Process]
    log: Path

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")


@asynccontextmanager
async def serving(args: Sequence[str], tmp_path: Path, *, port: int, cwd: Path = REPO,
                  env: dict[str, str] | None = None) -> AsyncIterator[Served]:
    """`mcphub serve ARGS` in a subprocess, once it answers /healthz on 127.0.0.1:PORT."""
    log = tmp_path / f"serve-{port}.log"
    with log.open("wb") as sink:
        process = subprocess.Popen([PYTHON, "-m", "mcphub", "serve", *args], cwd=cwd, env=env or _env(),
                                   stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.STDOUT)
    try:
        async with httpx2.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            with anyio.fail_after(SERVE_START_TIMEOUT):
                while True:
                    assert process.poll() is None, log.read_text(encoding="utf-8", errors="replace")
                    try:
                        if (await client.get("/healthz")).status_code == 200:
                            break
                    except httpx2.TransportError:
                        pass
                    await anyio.sleep(0.05)
            descendants = psutil.Process(process.pid).children(recursive=True)
            yield Served(process, client, descendants, log)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=STOP_TIMEOUT)


async def _terminate(served: Served) -> int:
    served.process.send_signal(signal.SIGTERM)
    return await anyio.to_thread.run_sync(lambda: served.process.wait(timeout=STOP_TIMEOUT))


def _alive(processes: list[psutil.Process]) -> list[psutil.Process]:
    alive = []
    for p in processes:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                alive.append(p)
        except psutil.NoSuchProcess:
            pass
    return alive


def test_serve_on_all_interfaces_without_a_credential_is_refused(tmp_path: Path) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    path = _config(tmp_path, {"servers": {"sample": _sample(env={"SAMPLE_MARKERS": str(markers)})}})
    result = mcphub("serve", "--host", "0.0.0.0", "--port", str(free_port()), "-c", str(path))
    assert result.returncode == 2, _output(result)
    _no_traceback(result)
    assert result.stderr.startswith("mcphub: refusing to serve on 0.0.0.0 without a credential"), _output(result)
    assert "--allow-no-auth" in result.stderr
    assert list(markers.iterdir()) == []  # no server was started


def test_an_empty_api_key_is_not_a_credential(tmp_path: Path) -> None:
    path = _config(tmp_path, {"servers": {"sample": _sample()}})
    result = mcphub("serve", "--host", "0.0.0.0", "--port", str(free_port()), "--api-key", "", "-c", str(path))
    assert result.returncode == 2, _output(result)
    _no_traceback(result)
    assert result.stderr.strip() == "mcphub: --api-key: the key is empty (is the variable you passed set?)"


def test_a_blank_mcphub_api_key_variable_is_not_a_credential(tmp_path: Path) -> None:
    path = _config(tmp_path, {"servers": {"sample": _sample()}})
    result = mcphub("serve", "--host", "0.0.0.0", "--port", str(free_port()), "-c", str(path),
                    env=_env(MCPHUB_API_KEY="  "))
    assert result.returncode == 2, _output(result)
    assert result.stderr.startswith("mcphub: refusing to serve on 0.0.0.0 without a credential"), _output(result)


def test_serve_when_the_port_is_taken_says_so_in_one_line_and_exits_2_before_starting_a_server(tmp_path: Path) -> None:
    path = _config(tmp_path, {"servers": {"sample": _sample()}})
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = mcphub("serve", "--port", str(port), "-c", str(path))
    assert result.returncode == 2, _output(result)
    _no_traceback(result)
    errors = [line for line in result.stderr.splitlines() if line.startswith("mcphub:")]
    assert errors == [f"mcphub: cannot listen on 127.0.0.1:{port}: address already in use (another program, "
                      "or another mcphub, has it; pick another --port)"], _output(result)
    assert "starting 'sample'" not in result.stderr, _output(result)  # nothing was spawned for nothing


@pytest.mark.anyio
async def test_serve_on_all_interfaces_with_allow_no_auth_serves_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    path = _config(tmp_path, {"servers": {"sample": _sample()}})
    port = free_port()
    async with serving(["--host", "0.0.0.0", "--port", str(port), "--allow-no-auth", "-c", str(path)],
                       tmp_path, port=port) as served:
        assert served.descendants, "the hub started no MCP server process"
        response = await served.client.post("/sample/add", json={"a": 2, "b": 3})
        assert response.status_code == 200, response.text
        assert response.json()["total"] == 5
        code = await _terminate(served)
        assert code == 0, served.output()
        assert not _alive(served.descendants), served.output()
        assert "Traceback" not in served.output()
        assert "WITHOUT any credential" in served.output()


@pytest.mark.anyio
@pytest.mark.parametrize("key_from", ["--api-key", "MCPHUB_API_KEY"])
async def test_the_one_liner_serves_one_stdio_server_named_after_its_command(tmp_path: Path, key_from: str) -> None:
    port = free_port()
    args = ["--port", str(port)]
    env = _env()
    if key_from == "--api-key":
        args += ["--api-key", KEY]
    else:
        env["MCPHUB_API_KEY"] = KEY
    args += ["--", PYTHON, "-m", "tests.mcp_servers.sample"]
    async with serving(args, tmp_path, port=port, env=env) as served:
        assert served.descendants, "the hub started no MCP server process"
        ready = await served.client.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert list(ready.json()["servers"]) == ["sample"]

        response = await served.client.post("/sample/add", json={"a": 2, "b": 3},
                                            headers={"Authorization": f"Bearer {KEY}"})
        assert response.status_code == 200, response.text
        assert response.json()["total"] == 5
        assert_error(await served.client.post("/sample/add", json={"a": 2, "b": 3}), 401, "unauthorized")
        assert_error(await served.client.post("/sample/add", json={"a": 2, "b": 3},
                                              headers={"Authorization": "Bearer wrong-key"}), 401, "unauthorized")

        code = await _terminate(served)
        assert code == 0, served.output()
        assert not _alive(served.descendants), served.output()
        assert KEY not in served.output()


def _bundled_import_problems(cwd: Path) -> list[str]:
    problems = []
    for name in BUNDLED:
        result = subprocess.run(["python", "-c", f"import mcphub_servers.{name}.server"], cwd=cwd, env=_env(),
                                capture_output=True, text=True, encoding="utf-8", timeout=CLI_TIMEOUT)
        if result.returncode != 0:
            last = (result.stderr.strip().splitlines() or ["?"])[-1]
            problems.append(f"mcphub_servers.{name}: {last}")
    return problems


@pytest.mark.anyio
async def test_serve_without_a_config_serves_the_bundled_servers(tmp_path: Path) -> None:
    problems = _bundled_import_problems(tmp_path)
    if problems:
        pytest.skip("bundled servers not importable yet: " + "; ".join(problems))
    port = free_port()
    async with serving(["--port", str(port)], tmp_path, port=port, cwd=tmp_path) as served:
        with anyio.fail_after(SERVE_START_TIMEOUT):
            while (ready := await served.client.get("/readyz")).status_code != 200:
                await anyio.sleep(0.1)
        servers = ready.json()["servers"]
        assert set(servers) == set(BUNDLED), ready.text
        assert all(s["state"] == "ready" for s in servers.values()), ready.text

        response = await served.client.post("/time/get_current_time", json={"timezone": "UTC"})
        assert response.status_code == 200, response.text
        assert "UTC" in response.text

        code = await _terminate(served)
        assert code == 0, served.output()
        assert not _alive(served.descendants), served.output()
