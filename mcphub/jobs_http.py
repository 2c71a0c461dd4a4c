"""Jobs and progress on the HTTP face: `Prefer: respond-async`, `Accept: text/event-stream`, `/jobs`.

    POST /{server}/{tool}  Prefer: respond-async   → 202, Location: <root>/jobs/{id}, the job
    POST /{server}/{tool}  Accept: text/event-stream → `progress` events, then one `result` or `error`
    GET /jobs, GET /jobs/{id}, DELETE /jobs/{id}    → the caller's jobs; cancel one
    GET /jobs/{id}  Accept: text/event-stream       → follow a job (from any replica): `progress` events,
                                                      then `result`, `error` or `cancelled`

A call refused before it reaches the server (404, 403, 422, 429) is answered as the synchronous call
would be, in either form: no job is started, no stream is opened. Both forms run the call under the
server's `job_timeout` rather than its `timeout`. The event stream is bound to its connection: a
client that hangs up cancels the call (the server is sent notifications/cancelled).

Preferences (RFC 7240): `respond-async` is the one the hub acts on; it answers `Preference-Applied:
respond-async`. Any other preference (`wait=`, `return=`, `handling=`) is ignored, as the RFC says, and
the call is answered as without it. Asking for both a job and an event stream is a 400: they are two
different answers to one request.
"""

from __future__ import annotations

import enum
import json
import logging
from collections.abc import AsyncGenerator
from contextlib import aclosing

import anyio
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from mcphub.errors import BadRequest, HubError
from mcphub.invoker import CLIENT_CLOSED, Call, Invoker, Outcome
from mcphub.jobs import Job, JobRunner, JobStatus, Progress, ProgressSink, job_timeout
from mcphub.toolserver import Json

logger = logging.getLogger(__name__)

RESPOND_ASYNC = "respond-async"
EVENT_STREAM = "text/event-stream"
KEEPALIVE = 15.0  # seconds between SSE comments while no event is due (proxies cut idle streams at ~60 s)
PROGRESS_BUFFER = 64  # progress events queued for a slow reader; older ones are dropped (progress is absolute)


class Answer(enum.Enum):
    JOB = "job"
    STREAM = "stream"


def wanted(request: Request) -> Answer | None:
    """What form of answer a tool call asks for: a job, an event stream, or (None) the usual one."""
    preferences = {_preference_name(p) for value in request.headers.getlist("prefer") for p in value.split(",")}
    job = RESPOND_ASYNC in preferences
    stream = _accepts_stream(request)
    if job and stream:
        raise BadRequest("the request asks for a job (Prefer: respond-async) and an event stream (Accept: "
                         "text/event-stream) at once: send one of the two")
    return Answer.JOB if job else Answer.STREAM if stream else None


def _accepts_stream(request: Request) -> bool:
    accepted = request.headers.get("accept", "").split(",")
    return any(part.split(";")[0].strip().lower() == EVENT_STREAM for part in accepted)


def _preference_name(preference: str) -> str:
    return preference.split(";")[0].split("=")[0].strip().lower()


class JobsFace:
    """The HTTP side of one JobRunner."""

    def __init__(self, runner: JobRunner) -> None:
        self.runner = runner

    @property
    def invoker(self) -> Invoker:
        return self.runner.invoker

    async def call(self, request: Request, call: Call, answer: Answer) -> Response:
        """A tool call (already authenticated) answered as a job or as an event stream."""
        try:
            body = await request.body()
        except ClientDisconnect:
            return Response(status_code=CLIENT_CLOSED)
        call = Call(call.principal, call.server, call.tool, body=body, authorization=call.authorization,
                    face=call.face)
        if answer is Answer.STREAM:
            return _EventStream(self.invoker, call)
        started = await self.runner.start(call)
        if isinstance(started, Outcome):
            return JSONResponse(started.body, status_code=started.status, headers=dict(started.headers) or None)
        root = request.scope.get("root_path", "")
        return JSONResponse(started.view(), status_code=202, headers={
            "Location": f"{root}/jobs/{started.id}", "Preference-Applied": RESPOND_ASYNC})

    async def list(self, request: Request) -> Response:
        principal = await self.invoker.auth.require_async(request.headers.get("authorization"), request.headers)
        jobs = await self.runner.owned_by(principal)
        return JSONResponse({"jobs": [_view(job) for job in jobs]})

    async def get(self, request: Request) -> Response:
        principal = await self.invoker.auth.require_async(request.headers.get("authorization"), request.headers)
        if _accepts_stream(request):  # follow it: the first read answers 400/404/503 as JSON, as without
            updates = self.runner.follow(principal, request.path_params["job"])
            try:
                first = await anext(updates)
            except BaseException:
                await updates.aclose()
                raise
            return _JobEvents(first, updates)
        return JSONResponse(_view(await self.runner.get(principal, request.path_params["job"])))

    async def delete(self, request: Request) -> Response:
        principal = await self.invoker.auth.require_async(request.headers.get("authorization"), request.headers)
        return JSONResponse(_view(await self.runner.cancel(principal, request.path_params["job"])))


def _view(job: Job) -> dict[str, Json]:
    return job.view()


class _EventStream(Response):
    """The call, answered as server-sent events: `progress` as the server reports it, then one `result`
    (the body the synchronous call answers) or `error` (`{"status_code": N, "error": {...}}`). Refused
    before reaching the server, the call is answered as plain JSON instead (no stream)."""

    def __init__(self, invoker: Invoker, call: Call) -> None:
        super().__init__(status_code=200, media_type=EVENT_STREAM)
        self._invoker = invoker
        self._call = call

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        sender, events = anyio.create_memory_object_stream[Progress](PROGRESS_BUFFER)

        async def deliver(progress: Progress) -> None:
            try:
                sender.send_nowait(progress)
            except (anyio.WouldBlock, anyio.ClosedResourceError, anyio.BrokenResourceError):
                pass  # a slow reader misses intermediate progress; the next event says where it is

        sink = ProgressSink(deliver)
        admitted = anyio.Event()
        reached = False
        answered: list[Outcome] = []

        def on_call() -> None:
            nonlocal reached
            reached = True
            admitted.set()

        call = Call(self._call.principal, self._call.server, self._call.tool, body=self._call.body,
                    authorization=self._call.authorization, face=self._call.face, progress=sink,
                    timeout=job_timeout(self._invoker, self._call.server, self._call.tool), on_call=on_call)

        async def run() -> None:
            try:
                answered.append(await self._invoker.invoke(call))
                await sink.settled()
            finally:
                admitted.set()
                sender.close()

        async def watch_hang_up() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            group.cancel_scope.cancel()  # the call with it: the server is sent notifications/cancelled

        async with anyio.create_task_group() as group:
            group.start_soon(run)
            group.start_soon(watch_hang_up)
            await admitted.wait()
            if not reached:  # refused before the server: the usual answer, as JSON
                await sender.aclose()
                await events.aclose()
                outcome = answered[0] if answered else None
                if outcome is None:
                    response = Response(status_code=CLIENT_CLOSED)
                else:
                    response = JSONResponse(outcome.body, status_code=outcome.status,
                                            headers=dict(outcome.headers) or None)
                await response(scope, receive, send)
                group.cancel_scope.cancel()
                return
            await send({"type": "http.response.start", "status": 200, "headers": [
                (b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-store"),
                (b"x-accel-buffering", b"no")]})  # nginx: pass each event on as it comes
            async with events:
                while True:
                    progress: Progress | None = None
                    with anyio.move_on_after(KEEPALIVE):
                        try:
                            progress = await events.receive()
                        except anyio.EndOfStream:
                            break
                    if progress is None:  # nothing for a while: a comment line keeps proxies from cutting it
                        await send({"type": "http.response.body", "body": b": still running\n\n", "more_body": True})
                        continue
                    await _event(send, "progress", {"progress": progress.progress, "total": progress.total,
                                                    "message": progress.message})
            outcome = answered[0] if answered else None
            if outcome is None:  # (run ended without an answer: cancelled; nothing more to say)
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            elif 200 <= outcome.status < 300:
                await _event(send, "result", outcome.body, more=False)
            else:
                detail = outcome.body.get("error", outcome.body) if isinstance(outcome.body, dict) else outcome.body
                event: dict[str, Json] = {"status_code": outcome.status, "error": detail}
                retry_after = outcome.headers.get("Retry-After")
                if retry_after is not None:  # (a 429 or 503: when to try again, as the header would say)
                    event["retry_after"] = int(retry_after)
                await _event(send, "error", event, more=False)
            group.cancel_scope.cancel()


class _JobEvents(Response):
    """A job followed as server-sent events (GET /jobs/{id}, Accept: text/event-stream): its progress as
    `progress` events (the latest at once, then each change), then one `result` (the body), `error`
    (`{"status_code": N, "error": {...}}`, as a call's event stream ends) or `cancelled` (the job's view).
    Hanging up stops following, not the job. A job gone meanwhile, or the shared state lost, ends the
    stream with an `error` event carrying that (404, 503): GET the job again to see where it is."""

    def __init__(self, first: Job, updates: AsyncGenerator[Job]) -> None:
        super().__init__(status_code=200, media_type=EVENT_STREAM)
        self._first = first
        self._updates = updates

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def watch_hang_up() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            group.cancel_scope.cancel()

        async with aclosing(self._updates) as updates, anyio.create_task_group() as group:
            group.start_soon(watch_hang_up)
            await send({"type": "http.response.start", "status": 200, "headers": [
                (b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-store"),
                (b"x-accel-buffering", b"no")]})
            job, shown, quiet = self._first, None, anyio.current_time()
            while True:
                if job.progress is not None and job.progress != shown:
                    shown, quiet = job.progress, anyio.current_time()
                    await _event(send, "progress", {"progress": shown.progress, "total": shown.total,
                                                    "message": shown.message})
                if job.finished:
                    await _ended(send, job)
                    break
                if anyio.current_time() - quiet >= KEEPALIVE:  # a comment line keeps proxies from cutting it
                    quiet = anyio.current_time()
                    await send({"type": "http.response.body", "body": b": still running\n\n", "more_body": True})
                try:
                    job = await anext(updates)  # at the latest FOLLOW_POLL seconds on
                except HubError as exc:  # gone meanwhile (404), or the shared state unreachable (503)
                    await _event(send, "error", {"status_code": exc.status_code, "error": exc.body()["error"]},
                                 more=False)
                    break
            group.cancel_scope.cancel()


async def _ended(send: Send, job: Job) -> None:
    if job.status is JobStatus.SUCCEEDED:
        await _event(send, "result", job.result, more=False)
    elif job.status is JobStatus.CANCELLED:
        await _event(send, "cancelled", job.view(), more=False)
    else:
        await _event(send, "error", {"status_code": job.status_code, "error": job.error}, more=False)


async def _event(send: Send, name: str, data: Json, *, more: bool = True) -> None:
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    await send({"type": "http.response.body", "body": f"event: {name}\ndata: {text}\n\n".encode(),
                "more_body": more})
