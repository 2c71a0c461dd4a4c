"""bench/cost.py, each measurement at its smallest, through the script's own functions: so it cannot rot.

Real `mcphub serve` processes on 127.0.0.1, as the benchmark runs them; the figures are not checked, only
that every measurement ran, answered what it was asked and reported it.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from bench import cost
from bench.loadgen import Response


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Every measurement at its smallest, once per test process (under xdist, per worker that needs it)."""
    workdir = tmp_path_factory.mktemp("cost")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cost, "SETTLE", 0.1)
        rest = cost.measure_rest(workdir, runs=1)
    return {
        "ready": cost.measure_ready(workdir, (1,), runs=1),
        "rest": rest,
        "spec": cost.measure_spec(workdir, (10,), keys=1, cached=2, runs=1),
        "payload": cost.measure_payload(workdir, (1000,), (1, 2), {1000: 5}, runs=1),
        "slow": cost.measure_slow(workdir, 20, 1.0, runs=1),
        "jwt": cost.measure_jwt(workdir, subjects=5, cycles=(3,), tools=10),
    }


def test_ready_counts_the_hub_and_its_children(results):
    [row] = results["ready"]
    assert row["servers"] == 1 and 0 < row["ready_s"] < cost.READY_TIMEOUT
    assert row["children"] == 2  # the launcher and the server it forked
    assert row["hub_rss_mib"] > 0 and row["children_pss_mib"] <= row["children_rss_mib"]


def test_rest_is_the_packaged_default_config(results):
    rest = results["rest"]
    assert rest["children"] >= 2  # the launcher and the bundled servers it forked
    assert rest["hub_rss_mib"] > 0


def test_spec_is_fetched_first_uncached_and_cached(results):
    [row] = results["spec"]
    assert row["tools"] == 10 and row["bytes"] > 10 * 1000  # ten operations with their schemas
    assert row["first_ms"] > 0 and row["uncached_ms"] > 0 and row["cached_ms"] > 0


def test_payload_answers_have_the_size_asked_for(results):
    rows = results["payload"]
    assert [(r["bytes"], r["concurrency"], r["calls"]) for r in rows] == [(1000, 1, 5), (1000, 2, 5)]
    assert all(0 < r["p50_ms"] <= r["p99_ms"] for r in rows)


def test_a_wrong_payload_size_fails_the_run():
    class Short:
        async def post(self, body: bytes) -> Any:
            return Response(200, {}, b'"xxxx"')

    with pytest.raises(cost.LoadError, match="expected a JSON string of 1000 bytes, got 6 bytes"):
        anyio.run(cost.blob_call(Short(), 1000), 0)  # type: ignore[arg-type]


def test_slow_calls_are_all_answered_together(results):
    slow = results["slow"]
    assert slow["answered"] == 20 and slow["failed"] == 0 and slow["again_answered"] == 20
    assert 1.0 <= slow["wall_s"] < 10.0  # held together, not one after another (20 s)
    assert slow["hub_rss_peak_mib"] >= slow["hub_rss_before_mib"]


def test_jwt_subjects_call_and_fetch_the_spec(results):
    jwt = results["jwt"]
    assert jwt["subjects"] == 5 and 0 < jwt["call_p50_ms"] <= jwt["call_p99_ms"]
    assert jwt["spec_p50_ms"] > 0 and jwt["hub_rss_after_specs_mib"] > 0
    assert [c["subjects"] for c in jwt["cycles"]] == [3] and jwt["cycles"][0]["second_round_p50_ms"] > 0


def test_the_report_has_a_row_for_each_measurement(results):
    assert set(results) == set(cost.MEASUREMENTS)
    table, targets = cost.report(results)
    assert "1 | " in table and "10 | " in table and "1,000 B | 2 |" in table
    assert "20 concurrent calls holding 1 s: 20 answered, 0 failed" in table
    assert "JWT, 5 subjects calling in turn" in table
    assert "JWT, 3 subjects fetching the spec twice round" in table
    assert {t["target"] for t in targets} == {"hub RSS at rest, default config < 75 MiB",
                                              "20 slow calls all answered, hub RSS < 200 MiB"}
