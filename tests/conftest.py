from collections.abc import Iterator

import pytest

from tests import hub


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True, scope="module")
def in_process_default(request: pytest.FixtureRequest) -> Iterator[None]:
    """`running_hub` runs in-process unless the test module is one that predates that default and still
    needs real processes (tests/hub.py REAL_PROCESS_MODULES)."""
    hub.set_default_in_process(request.module.__name__ not in hub.REAL_PROCESS_MODULES)
    yield
    hub.set_default_in_process(True)
