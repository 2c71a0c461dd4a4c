"""`mcphub chat` as a user runs it: a subprocess, a config file, a fake model backend on 127.0.0.1.

Real processes, on purpose (the whole module, the chat CLI's smoke tests): the command line, its exit
codes and its output are the point. tests/runner/test_chat_api.py covers the chat itself in-process."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import yaml

from mcphub.cli import RUNNER_DOCS
from tests.fakes.llm import FakeLLM, Turn, chained_adds
from tests.helpers import PYTHON, REPO, free_port, serve_in_thread
from tests.hub import sample_server

CLI_TIMEOUT = 60  # seconds for a whole chat, servers started and stopped included


def write_config(tmp_path: Path, base_url: str, **runner: Any) -> Path:
    path = tmp_path / "mcphub.yaml"
    path.write_text(yaml.safe_dump({
        "servers": {"sample": sample_server(), "other": sample_server()},
        "runner": {"backend": "openai", "base_url": base_url, "model": "fake-model", "servers": ["sample"], **runner},
    }), encoding="utf-8")
    return path


def chat(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PYTHON, "-m", "mcphub", "chat", *args], cwd=REPO, capture_output=True, text=True,
                          encoding="utf-8", timeout=CLI_TIMEOUT, input=stdin)


def test_chat_prints_each_tool_call_and_result_then_the_answer(tmp_path: Path) -> None:
    fake = FakeLLM(chained_adds)
    with serve_in_thread(fake.openai_app()) as url:
        config = write_config(tmp_path, url + "/v1")
        done = chat("-c", str(config), "What is 2+3, plus 10?")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "Let me add.",
        '[sample_add] {"a": 2, "b": 3}',
        '[sample_add] -> {"total": 5, "operands": [2, 3]}',
        '[sample_add] {"a": 5, "b": 10}',
        '[sample_add] -> {"total": 15, "operands": [5, 10]}',
        "The total is 15.",
    ]
    assert fake.requests[0]["messages"] == [{"role": "user", "content": "What is 2+3, plus 10?"}]
    assert all(not t["function"]["name"].startswith("other_") for t in fake.requests[0]["tools"])


def test_chat_model_option_picks_the_backend_model_and_the_repl_keeps_the_conversation(tmp_path: Path) -> None:
    fake = FakeLLM(lambda messages, tools: Turn(f"{sum(m['role'] == 'user' for m in messages)} questions so far."))
    with serve_in_thread(fake.openai_app()) as url:
        config = write_config(tmp_path, url + "/v1")
        done = chat("-c", str(config), "--model", "other-model", stdin="hello\nagain\n")
    assert done.returncode == 0, done.stderr
    assert "1 questions so far." in done.stdout and "2 questions so far." in done.stdout
    assert [r["model"] for r in fake.requests] == ["other-model", "other-model"]
    assert [m["content"] for m in fake.requests[1]["messages"]] == ["hello", "1 questions so far.", "again"]


def test_chat_with_the_backend_down_says_so_and_exits_1(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    done = chat("-c", str(write_config(tmp_path, url)), "hi")
    assert done.returncode == 1
    assert f"mcphub: model backend {url}/chat/completions is unreachable" in done.stderr
    assert "Traceback" not in done.stderr


def test_chat_without_a_runner_section_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "mcphub.yaml"
    path.write_text(json.dumps({"servers": {"sample": sample_server()}}), encoding="utf-8")
    done = chat("-c", str(path), "hi")
    assert done.returncode == 2
    assert done.stderr.startswith(f"mcphub: {path} has no runner: section. `runner: {{}}` alone chats through "
                                  "Ollama at http://127.0.0.1:11434"), done.stderr
    assert "set backend, base_url and model for another: see " + RUNNER_DOCS in done.stderr, done.stderr
    assert "example.yaml" not in done.stderr and "default.yaml" not in done.stderr, done.stderr


def test_chat_without_a_config_names_the_packaged_default_and_what_to_make(tmp_path: Path) -> None:
    done = subprocess.run([PYTHON, "-m", "mcphub", "chat", "hi"], cwd=tmp_path, capture_output=True, text=True,
                          encoding="utf-8", timeout=CLI_TIMEOUT)
    assert done.returncode == 2
    assert done.stderr.startswith("mcphub: the packaged default config has no runner: section (make "
                                  "./mcphub.yaml, or pass -c FILE)"), done.stderr


def test_the_readme_section_chat_points_at_exists_and_says_what_the_message_promises() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    reference = readme[readme.index("\n## Config reference\n"):]
    reference = reference[:reference.index("\n## ", 1)]
    start = reference.index("\n### `runner`\n")
    section = reference[start:reference.find("\n#", start + 1)]
    assert "`runner: {}` alone is enough" in section and "qwen3:14b" in section
    assert all(f"  {field}:" in section for field in ("backend", "base_url", "model")), section
