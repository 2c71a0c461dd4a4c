"""Calls that outlast a timeout: jobs, their store and their runner.

A job is one tool call run in the hub's own lifetime rather than a request's: the HTTP face starts one
for `POST /{server}/{tool}` with `Prefer: respond-async` (202 + Location), and the caller polls
`GET /jobs/{id}`, lists `GET /jobs`, or cancels with `DELETE /jobs/{id}`. The call itself is the
invoker's like any other (scope, limits, validation, metrics, audit), with the server's `job_timeout`
instead of its `timeout`, and its progress notifications kept on the job.

    JobStore    where jobs are kept: a Protocol; `MemoryJobStore` here, a shared store can replace it.
                A `Job` is plain data (`to_json` / `from_json`), so a store can keep it anywhere.
    JobRunner   starts, reads, lists and cancels jobs for one invoker; runs them in a task group
                entered with `async with runner.running()` (the hub's lifetime, like the MCP face)

A job belongs to the principal that started it (its audit name): anyone else gets the 404 an unknown id
gets. A call refused before it reaches the server (404, 403, 422, 429) is answered at once, as the
synchronous call would be, and leaves no job. No job stays running forever: `job_timeout` bounds the
call, a server that dies under it answers 503 (the job fails with that error), and shutdown fails every
running job ("hub shutting down").
"""

from __future__ import annotations

import dataclasses
import enum
import heapq
import logging
import math
import re
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Collection
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

import anyio
from anyio.abc import TaskGroup

from mcphub.auth import Principal
from mcphub.errors import BadRequest, HubError, NotFound, RateLimited, ServerUnavailable
from mcphub.invoker import SHUTDOWN_RETRY_AFTER, Call, Invoker, Outcome
from mcphub.toolserver import Json, ProgressRelay

logger = logging.getLogger(__name__)

JOB_ID = re.compile(r"^[0-9a-f]{32}$")  # uuid4().hex: unguessable, and safe in a URL and a log line
SHUTDOWN_WRITE = 2.0  # seconds to record "hub shutting down" on the jobs still running
RUNNING_RETRY_AFTER = 5  # seconds a caller over jobs.max_running_per_key is told to wait
KEEP_ALIVE = 1.0  # seconds between a shared store's lease renewals (and checks for cancels asked elsewhere)
CANCEL_WAIT = 10.0  # seconds a cancel through another process waits for the job to end there
FOLLOW_POLL = 0.25  # seconds between a follower's reads of a job that changes elsewhere (another replica)
MAX_FINISHED = 10_000  # finished jobs one process keeps (memory); past it, those closest to expiry go first
SHUTTING_DOWN = "the hub is shutting down; the job was stopped (start it again once the hub is back)"


class JobStatus(enum.StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class JobConflict(HubError):
    """409: the job cannot do what was asked (cancel a job that has ended)."""

    status_code = 409
    type = "conflict"


@dataclass(frozen=True, slots=True)
class Progress:
    progress: float
    total: float | None
    message: str | None


@dataclass(frozen=True, slots=True)
class Job:
    """A job's state: plain, serialisable data. `status_code` (once finished): the status the synchronous
    call would have answered; `result` its body (2xx), `error` its error detail (the one error shape's
    `error` object). `expires`: when a finished job is forgotten (epoch seconds)."""

    id: str
    owner: str  # the principal's audit name (`key:NAME`, `jwt:SUBJECT`)
    server: str
    tool: str
    status: JobStatus
    created: float  # epoch seconds
    updated: float
    progress: Progress | None = None
    status_code: int | None = None
    result: Json = None
    error: Json = None
    expires: float | None = None
    mcp: Json = None  # the server's own MCP answer, wire form: {"result": CallToolResult} or {"error": ErrorData}
    # (kept only for a job started on the MCP face, `start(keep_mcp=True)`: an answer is kept once more)

    @property
    def finished(self) -> bool:
        return self.status is not JobStatus.RUNNING

    def to_json(self) -> dict[str, Json]:
        """Everything a store keeps, as JSON."""
        data = dataclasses.asdict(self)
        data["status"] = str(self.status)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Json]) -> Job:
        """A job as `to_json` wrote it. Keys that are not fields here are ignored: another version's (replicas
        of two versions share Redis during a rolling update)."""
        progress = data.get("progress")
        known = {key: value for key, value in data.items() if key in _JOB_FIELDS}
        return cls(**{**known, "status": JobStatus(data["status"]),
                      "progress": Progress(**progress) if progress is not None else None})

    def view(self) -> dict[str, Json]:
        """What a caller sees (GET /jobs/{id}, the 202 body)."""
        body: dict[str, Json] = {
            "id": self.id, "server": self.server, "tool": self.tool, "status": str(self.status),
            "progress": dataclasses.asdict(self.progress) if self.progress is not None else None,
            "created": timestamp(self.created), "updated": timestamp(self.updated),
        }
        if self.status_code is not None:
            body["status_code"] = self.status_code
        if self.status is JobStatus.SUCCEEDED:
            body["result"] = self.result
        elif self.error is not None:
            body["error"] = self.error
        return body


_JOB_FIELDS = frozenset(field.name for field in dataclasses.fields(Job))


def _mcp_answer(outcome: Outcome | None) -> Json:
    """What the server answered in MCP terms (the MCP face's tasks/result passes it on), if it answered."""
    if outcome is None:
        return None
    if outcome.result is not None:
        return {"result": outcome.result.model_dump(by_alias=True, mode="json", exclude_none=True)}
    if outcome.mcp_error is not None:
        return {"error": outcome.mcp_error.error.model_dump(mode="json", exclude_none=True)}
    return None


def timestamp(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JobStore(Protocol):
    """Where jobs are kept. Finished jobs are gone (None, not listed) once past their `expires`."""

    async def create(self, job: Job, max_running: int) -> bool:
        """Keep a new running job, unless its owner has `max_running` running already (then False):
        one step, so two starts cannot both take the last place."""
        ...

    async def update(self, job: Job) -> None: ...

    async def delete(self, job_id: str) -> None: ...

    async def get(self, job_id: str) -> Job | None: ...

    async def owned_by(self, owner: str) -> list[Job]:
        """`owner`'s jobs, oldest first."""
        ...

    @property
    def shared(self) -> bool:
        """Other hub processes see these jobs (shared_jobs.RedisJobStore): leases and cancels go through it."""
        ...

    async def keep_alive(self, running: Collection[str]) -> set[str]:
        """This process still runs `running` (shared stores: renew their leases); the ids among them
        cancelled from another process."""
        ...

    async def ask_cancel(self, job_id: str) -> None:
        """Ask the process running `job_id` to cancel it (shared stores)."""
        ...


class MemoryJobStore:
    """The jobs of one hub process, in memory. Expired jobs are dropped as any method runs."""

    shared = False

    def __init__(self, clock: Callable[[], float] = time.time, max_finished: int = MAX_FINISHED) -> None:
        self._clock = clock
        self._max_finished = max_finished
        self._jobs: dict[str, Job] = {}
        self._expiring: list[tuple[float, str]] = []  # (expires, id), a heap

    async def create(self, job: Job, max_running: int) -> bool:
        self._expire()
        running = sum(1 for each in self._jobs.values() if each.owner == job.owner and not each.finished)
        if running >= max_running:
            return False
        self._jobs[job.id] = job
        return True

    async def update(self, job: Job) -> None:
        if job.id not in self._jobs:  # deleted, or expired meanwhile
            return
        self._jobs[job.id] = job
        if job.expires is not None:
            heapq.heappush(self._expiring, (job.expires, job.id))
            while len(self._expiring) > self._max_finished:
                _, dropped = heapq.heappop(self._expiring)
                self._jobs.pop(dropped, None)

    async def delete(self, job_id: str) -> None:
        self._jobs.pop(job_id, None)

    async def get(self, job_id: str) -> Job | None:
        self._expire()
        return self._jobs.get(job_id)

    async def owned_by(self, owner: str) -> list[Job]:
        self._expire()
        return sorted((j for j in self._jobs.values() if j.owner == owner), key=lambda j: j.created)

    async def keep_alive(self, running: Collection[str]) -> set[str]:
        return set()

    async def ask_cancel(self, job_id: str) -> None:
        return None

    def _expire(self) -> None:
        now = self._clock()
        while self._expiring and self._expiring[0][0] <= now:
            _, job_id = heapq.heappop(self._expiring)
            job = self._jobs.get(job_id)
            if job is not None and job.expires is not None and job.expires <= now:
                del self._jobs[job_id]


class ProgressSink(ProgressRelay):
    """A call's progress notifications passed on as `Progress` (`deliver`), in order, the answer waiting
    for the last ones (toolserver.ProgressRelay). Progress is absolute and only grows (MCP), so one that
    arrives lower than the latest is dropped; `latest` is the last one passed on."""

    def __init__(self, deliver: Callable[[Progress], Awaitable[None]]) -> None:
        super().__init__(self._keep)
        self.latest: Progress | None = None
        self._deliver = deliver

    async def _keep(self, progress: float, total: float | None, message: str | None) -> None:
        if self.latest is None or progress >= self.latest.progress:
            self.latest = Progress(progress, total, message)
            await self._deliver(self.latest)


def job_timeout(invoker: Invoker, server: str, tool: str) -> float:
    """`server`'s job_timeout for `tool`; for a mounted server, no bound here (infinity): its own hub
    runs the call as an event stream under its own job_timeout (federation.RemoteMount.forward_streamed)."""
    config = invoker.config.servers.get(server)
    return config.job_timeout_for(tool) if config is not None else math.inf


class JobRunner:
    """The jobs of one invoker: started into a task group that lives as long as `running()`."""

    def __init__(self, invoker: Invoker, store: JobStore | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.invoker = invoker
        self.store: JobStore = store if store is not None else MemoryJobStore(clock)
        self._clock = clock
        self._group: TaskGroup | None = None
        self._scopes: dict[str, anyio.CancelScope] = {}  # the running jobs of this process
        self._cancelled: set[str] = set()  # cancelled by DELETE (not by shutdown)
        self._ended: dict[str, anyio.Event] = {}  # set once a running job's end is recorded
        self._changed: dict[str, anyio.Event] = {}  # set when a job of this process records progress or its end

    @asynccontextmanager
    async def running(self) -> AsyncIterator[JobRunner]:
        """Run jobs until the block ends; then every job still running fails ("hub shutting down")."""
        async with anyio.create_task_group() as group:
            self._group = group
            if self.store.shared:
                group.start_soon(self._keep_alive)
            try:
                yield self
            finally:
                self._group = None
                group.cancel_scope.cancel()  # each job records its own end (shielded, bounded)

    async def _keep_alive(self) -> None:
        """A shared store: renew this process's jobs' leases, and cancel those cancelled elsewhere."""
        while True:
            for job_id in await self.store.keep_alive(list(self._scopes)):
                scope = self._scopes.get(job_id)
                if scope is not None:
                    self._cancelled.add(job_id)
                    scope.cancel()
            await anyio.sleep(KEEP_ALIVE)  # a period, not a wait for a condition

    # -------------------------------------------------------------------------------------- start

    async def start(self, call: Call, *, keep_mcp: bool = False) -> Job | Outcome:
        """Start `call` as a job: the job once the call has gone to the server, or the call's own answer
        when it was refused before that (no job is left then). `keep_mcp`: keep the server's own MCP answer
        on the job too (`Job.mcp`: the MCP face's tasks/result passes it on as it was)."""
        group = self._group
        principal = call.principal
        if group is None:
            return Outcome.failed(ServerUnavailable("the hub is shutting down; retry shortly",
                                                    retry_after=SHUTDOWN_RETRY_AFTER, server=call.server,
                                                    tool=call.tool))
        now = self._clock()
        job = Job(uuid.uuid4().hex, principal.audit_name, call.server, call.tool, JobStatus.RUNNING, now, now)
        limit = self.invoker.config.jobs.max_running_per_key
        if not await self.store.create(job, limit):
            return Outcome.failed(RateLimited(
                f"credential '{principal.name}' has {limit} jobs running (jobs.max_running_per_key); wait for "
                "one to finish or cancel one (DELETE /jobs/{id})", retry_after=RUNNING_RETRY_AFTER,
                server=call.server, tool=call.tool))
        admitted = anyio.Event()
        answered: list[Outcome] = []  # the call's answer, when it came before the call reached the server
        reached = False

        def on_call() -> None:
            nonlocal reached
            reached = True
            admitted.set()

        sink = ProgressSink(lambda progress: self._progress(job.id, progress))
        call = dataclasses.replace(call, timeout=job_timeout(self.invoker, call.server, call.tool),
                                   progress=sink, on_call=on_call)
        group.start_soon(self._run, job, call, sink, admitted, answered, keep_mcp)
        await admitted.wait()
        if not reached:
            await self.store.delete(job.id)
            return answered[0] if answered else Outcome.failed(
                ServerUnavailable(SHUTTING_DOWN, retry_after=SHUTDOWN_RETRY_AFTER, server=call.server, tool=call.tool))
        logger.debug("job %s: %s/%s for %s", job.id, job.server, job.tool, job.owner)
        return await self.store.get(job.id) or job

    async def _run(self, job: Job, call: Call, sink: ProgressSink, admitted: anyio.Event,
                   answered: list[Outcome], keep_mcp: bool) -> None:
        outcome: Outcome | None = None
        scope = self._scopes[job.id] = anyio.CancelScope()
        ended = self._ended[job.id] = anyio.Event()
        try:
            with scope:
                outcome = await self.invoker.invoke(call)
                await sink.settled()
        finally:
            self._scopes.pop(job.id, None)
            cancelled = job.id in self._cancelled
            self._cancelled.discard(job.id)
            if outcome is not None and not admitted.is_set():
                answered.append(outcome)  # refused before the server: the start answers it, no job
            admitted.set()
            with anyio.CancelScope(shield=True), anyio.move_on_after(SHUTDOWN_WRITE):
                try:
                    await self._finish(job.id, outcome, sink.latest, cancelled, keep_mcp)
                except HubError as exc:  # a shared store that cannot be reached: the job's end is lost
                    logger.warning("job %s: its end could not be recorded: %s", job.id, exc.message)
            self._ended.pop(job.id, None)
            ended.set()

    async def _progress(self, job_id: str, progress: Progress) -> None:
        try:
            job = await self.store.get(job_id)
            if job is not None and not job.finished:
                await self.store.update(dataclasses.replace(job, progress=progress, updated=self._clock()))
                self._wake(job_id)
        except HubError:  # a shared store that cannot be reached (it logs that): the next one may get through
            pass

    async def _finish(self, job_id: str, outcome: Outcome | None, progress: Progress | None,
                      cancelled: bool, keep_mcp: bool) -> None:
        job = await self.store.get(job_id)
        if job is None:  # refused before the server (deleted), or expired
            return
        now = self._clock()
        if outcome is None and cancelled:
            status, code, result, error = JobStatus.CANCELLED, None, None, None
        elif outcome is None:  # the hub stopped under it
            error_ = ServerUnavailable(SHUTTING_DOWN, retry_after=SHUTDOWN_RETRY_AFTER, server=job.server,
                                       tool=job.tool)
            status, code, result, error = JobStatus.FAILED, error_.status_code, None, error_.body()["error"]
        elif 200 <= outcome.status < 300:
            status, code, result, error = JobStatus.SUCCEEDED, outcome.status, outcome.body, None
        else:
            body = outcome.body
            detail = body.get("error", body) if isinstance(body, dict) else body
            status, code, result, error = JobStatus.FAILED, outcome.status, None, detail
        ttl = self.invoker.config.jobs.ttl
        await self.store.update(dataclasses.replace(
            job, status=status, status_code=code, result=result, error=error, updated=now, expires=now + ttl,
            progress=progress or job.progress, mcp=_mcp_answer(outcome) if keep_mcp else None))
        self._wake(job_id)
        logger.debug("job %s: %s (%s)", job_id, status, code)

    def _wake(self, job_id: str) -> None:
        """Tell this process's followers of `job_id` that it changed."""
        changed = self._changed.pop(job_id, None)
        if changed is not None:
            changed.set()

    # ------------------------------------------------------------------------------- read, cancel

    async def get(self, principal: Principal, job_id: str) -> Job:
        """`principal`'s job `job_id`; BadRequest for what cannot be a job id, NotFound for any other's."""
        if not JOB_ID.match(job_id):
            shown = job_id if len(job_id) <= 64 else job_id[:64] + "..."
            raise BadRequest(f"'{shown}' is not a job id: a job id is 32 lowercase hex digits, as in the "
                             "Location header of the 202 that started the job")
        job = await self.store.get(job_id)
        if job is None or job.owner != principal.audit_name:
            ttl = self.invoker.config.jobs.ttl
            raise NotFound(f"no job '{job_id}' (a job is seen only by the credential that started it, and "
                           f"is kept {ttl:g}s after it ends: jobs.ttl). See GET /jobs.")
        return job

    async def owned_by(self, principal: Principal) -> list[Job]:
        return await self.store.owned_by(principal.audit_name)

    async def follow(self, principal: Principal, job_id: str) -> AsyncGenerator[Job]:
        """`principal`'s job `job_id` as it is, then as read again at least every FOLLOW_POLL seconds
        (changed or not), until it has ended (the last one yielded is finished). A job this process runs
        wakes its followers at once as it changes; one that runs on another replica (a shared store) is
        seen at the next read, so a follower there sees the latest progress (it is absolute) and the end.
        The first read raises as `get` does; a job gone later (deleted, expired, the shared state
        emptied) raises NotFound, an unreachable shared state ServerUnavailable."""
        job = await self.get(principal, job_id)
        yield job
        try:
            while not job.finished:
                changed = self._changed.setdefault(job_id, anyio.Event())
                with anyio.move_on_after(FOLLOW_POLL):
                    await changed.wait()
                job = await self.get(principal, job_id)
                yield job
        finally:  # wake the other followers of the job (they register again): no event outlives its followers
            self._wake(job_id)

    async def cancel(self, principal: Principal, job_id: str) -> Job:
        """Cancel a running job (the server is sent notifications/cancelled); the job as it ended."""
        job = await self.get(principal, job_id)
        if job.finished:
            raise JobConflict(f"job '{job_id}' has already ended ({job.status}): there is nothing to cancel",
                              server=job.server, tool=job.tool)
        scope, ended = self._scopes.get(job_id), self._ended.get(job_id)
        if (scope is None or ended is None) and self.store.shared:  # another process runs it: ask it
            await self.store.ask_cancel(job_id)
            with anyio.move_on_after(CANCEL_WAIT):
                while not job.finished:
                    await anyio.sleep(0.05)  # polling the condition: the job ended there (KEEP_ALIVE)
                    job = await self.get(principal, job_id)
            return job
        if scope is None or ended is None:
            raise JobConflict(f"job '{job_id}' runs in another hub process; cancel it there",
                              server=job.server, tool=job.tool)
        self._cancelled.add(job_id)
        scope.cancel()
        with anyio.move_on_after(SHUTDOWN_WRITE + 1):  # the job's task records its end at its next turn
            await ended.wait()
        return await self.store.get(job_id) or dataclasses.replace(job, status=JobStatus.CANCELLED)
