"""Jobs in Redis (`hub.state`): readable and cancellable from every hub replica on it.

    mcphub:jobs:job:ID     the job's JSON (jobs.Job.to_json); a finished one expires with its `expires`
    mcphub:jobs:owner:O    the ids of owner O's jobs (a set; ids whose job has expired are dropped as read)
    mcphub:jobs:lease:ID   set while the replica running job ID is alive: it renews the lease every
                           LEASE_RENEW seconds (`keep_alive`); a running job whose lease has lapsed ran on
                           a replica that died, and is recorded `failed` (503) by the first replica to read it
    mcphub:jobs:cancel:ID  a cancel asked for on another replica; the running one sees it at its next renewal

While Redis cannot be reached, jobs cannot be started, read or cancelled: each is a 503 with Retry-After
(the jobs of the running calls go on and record their end once Redis answers again, if it does in time).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable, Collection

from mcphub.errors import ServerUnavailable
from mcphub.jobs import Job, JobStatus
from mcphub.state import CLOSED_RETRY_AFTER, StateStore

logger = logging.getLogger(__name__)

PREFIX = "mcphub:jobs:"
LEASE_TTL = 10.0  # seconds a running job's lease lasts unrenewed: past it, its replica is taken for dead
LEASE_RENEW = 1.0  # seconds between renewals (and checks for cancels asked elsewhere): well under LEASE_TTL
CANCEL_TTL = 60.0  # seconds a cancel request waits for its job's replica to see it
LOST = ("the hub replica running this job stopped before it ended (its lease in the shared state lapsed); "
        "start the job again")

# KEYS[1] the owner's set, KEYS[2] the job, KEYS[3] its lease; ARGV: max running, job JSON, lease ms.
# ARGV[4], ARGV[6]: the job and lease key prefixes, ARGV[5]: the new job's id. Counts the owner's running
# jobs (dropping ids whose job expired; a lapsed lease is no running job) and keeps the new one unless at
# the limit.
_CREATE = """
local running = 0
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local raw = redis.call('GET', ARGV[4] .. id)
  if not raw then
    redis.call('SREM', KEYS[1], id)
  elseif cjson.decode(raw)['status'] == 'running' and redis.call('EXISTS', ARGV[6] .. id) == 1 then
    running = running + 1
  end
end
if running >= tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[2], ARGV[2])
redis.call('SADD', KEYS[1], ARGV[5])
redis.call('SET', KEYS[3], '1', 'PX', ARGV[3])
return 1
"""


class RedisJobStore:
    """A `jobs.JobStore` in the shared state; `ttl()`: jobs.ttl now (a lost job is kept that long)."""

    shared = True

    def __init__(self, store: StateStore, ttl: Callable[[], float]) -> None:
        self._store = store
        self._redis = store.client
        self._ttl = ttl
        self._create = self._redis.register_script(_CREATE)

    async def create(self, job: Job, max_running: int) -> bool:
        try:
            created = await self._create(
                keys=[_owner(job.owner), _job(job.id), _lease(job.id)],
                args=[max_running, json.dumps(job.to_json()), int(LEASE_TTL * 1000), PREFIX + "job:", job.id,
                      PREFIX + "lease:"])
        except self._store.errors as exc:
            raise self._down(exc) from None
        return bool(created)

    async def update(self, job: Job) -> None:
        try:
            await self._redis.set(_job(job.id), json.dumps(job.to_json()), xx=True,  # deleted or expired: not again
                                  pxat=None if job.expires is None else int(job.expires * 1000))
            if job.finished:
                await self._redis.delete(_lease(job.id), _cancel(job.id))
        except self._store.errors as exc:
            raise self._down(exc) from None

    async def delete(self, job_id: str) -> None:
        try:
            raw = await self._redis.get(_job(job_id))
            await self._redis.delete(_job(job_id), _lease(job_id), _cancel(job_id))
            if raw is not None:
                await self._redis.srem(_owner(json.loads(raw)["owner"]), job_id)
        except self._store.errors as exc:
            raise self._down(exc) from None

    async def get(self, job_id: str) -> Job | None:
        try:
            raw = await self._redis.get(_job(job_id))
            if raw is None:
                return None
            return await self._checked(Job.from_json(json.loads(raw)))
        except self._store.errors as exc:
            raise self._down(exc) from None

    async def owned_by(self, owner: str) -> list[Job]:
        try:
            ids = sorted(str(i) for i in await self._redis.smembers(_owner(owner)))  # decode_responses: str
            raws = await self._redis.mget([_job(i) for i in ids]) if ids else []
            jobs = [await self._checked(Job.from_json(json.loads(raw))) for raw in raws if raw is not None]
            gone = [job_id for job_id, raw in zip(ids, raws, strict=True) if raw is None]
            if gone:  # expired
                await self._redis.srem(_owner(owner), *gone)
        except self._store.errors as exc:
            raise self._down(exc) from None
        return sorted(jobs, key=lambda j: j.created)

    async def keep_alive(self, running: Collection[str]) -> set[str]:
        """Renew the leases of the jobs this replica runs; the ids among them cancelled elsewhere."""
        if not running:
            return set()
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for job_id in running:
                    pipe.set(_lease(job_id), "1", px=int(LEASE_TTL * 1000))
                    pipe.exists(_cancel(job_id))
                answers = await pipe.execute()
        except self._store.errors as exc:
            self._store.failed("jobs", exc)
            return set()
        self._store.succeeded()
        return {job_id for job_id, asked in zip(running, answers[1::2], strict=True) if asked}

    async def ask_cancel(self, job_id: str) -> None:
        try:
            await self._redis.set(_cancel(job_id), "1", px=int(CANCEL_TTL * 1000))
        except self._store.errors as exc:
            raise self._down(exc) from None

    async def _checked(self, job: Job) -> Job:
        """`job`, or, when it is running with a lapsed lease, the job recorded failed."""
        if job.finished or await self._redis.exists(_lease(job.id)):
            return job
        now = time.time()
        error = ServerUnavailable(LOST, retry_after=CLOSED_RETRY_AFTER, server=job.server, tool=job.tool)
        lost = dataclasses.replace(job, status=JobStatus.FAILED, status_code=error.status_code,
                                   error=error.body()["error"], updated=now, expires=now + self._ttl())
        logger.warning("job %s (%s/%s): its replica stopped; recorded failed", job.id, job.server, job.tool)
        await self._redis.set(_job(job.id), json.dumps(lost.to_json()), xx=True, pxat=int(lost.expires * 1000)
                              if lost.expires is not None else None)
        return lost

    def _down(self, exc: BaseException) -> ServerUnavailable:
        self._store.failed("jobs", exc)
        return ServerUnavailable(f"jobs are kept in the hub's shared state (Redis at {self._store.shown_url}), "
                                 f"which is unreachable; retry in {CLOSED_RETRY_AFTER}s",
                                 retry_after=CLOSED_RETRY_AFTER)


def _job(job_id: str) -> str:
    return f"{PREFIX}job:{job_id}"


def _lease(job_id: str) -> str:
    return f"{PREFIX}lease:{job_id}"


def _cancel(job_id: str) -> str:
    return f"{PREFIX}cancel:{job_id}"


def _owner(owner: str) -> str:
    return f"{PREFIX}owner:{owner}"
