from collections.abc import Iterator

import pytest

from tests.redis_server import RedisServer


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A real redis-server (tests/redis_server.py), not started yet; stopped after the test."""
    server = RedisServer()
    try:
        yield server
    finally:
        server.stop()
