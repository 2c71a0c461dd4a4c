"""Where users' OAuth tokens live: encrypted, behind a small interface (mcphub/oauth.py uses it).

`Sealer` holds the keys derived from `MCPHUB_SECRET_KEY` (HKDF-SHA256, one key per purpose): a Fernet
key for what is stored (tokens, a registered client's secret) and one for what travels through a
browser (connect links and the OAuth `state`, which are encrypted and authenticated, so they can name
the user and hold the PKCE verifier, and expire). Nothing is hand-rolled: Fernet is AES-128-CBC +
HMAC-SHA256 from `cryptography`.

`SecretStore` is the storage: bytes by key, with expiry, "claim this name once" for single-use links,
and a lock by name (held while a token is refreshed: a refresh token is good once, and an authorization
server that sees it used twice may revoke the whole grant). `MemoryStore` (default) keeps them in the
process (its locks are anyio locks); `RedisStore` in the hub's Redis (`hub.state`), so every replica sees
a user's connection, and its lock holds across replicas (`SET NX PX`, released only by its holder). Only
ciphertext is ever handed to a store.
"""

from __future__ import annotations

import base64
import secrets
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Protocol

import anyio
from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

if TYPE_CHECKING:  # the client comes from state.StateStore, which alone imports redis (tests/test_cost_fences.py)
    import redis.asyncio as redis

SECRET_KEY_ENV = "MCPHUB_SECRET_KEY"
MIN_SECRET_BYTES = 16  # a shorter MCPHUB_SECRET_KEY is refused: it protects every user's tokens
REDIS_PREFIX = "mcphub:oauth:"
MAX_MEMORY_ENTRIES = 100_000  # a memory store past this drops expired entries, then the oldest
LOCK_POLL = 0.05  # seconds between tries for a Redis lock another replica holds
# deletes the lock only if it is still the holder's (it may have expired and been taken by another)
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end"


class Sealer:
    """Encrypts what is stored and what travels through a browser, with keys derived from one secret."""

    def __init__(self, secret: str) -> None:
        material = secret.encode("utf-8")
        if len(material) < MIN_SECRET_BYTES:
            raise ValueError(f"{SECRET_KEY_ENV} is shorter than {MIN_SECRET_BYTES} bytes: it encrypts every "
                             "user's tokens; use a long random one (openssl rand -hex 32)")
        self._stored = Fernet(_derive(material, b"mcphub oauth token store"))
        self._links = Fernet(_derive(material, b"mcphub oauth links"))

    def seal(self, plain: bytes) -> bytes:
        return self._stored.encrypt(plain)

    def open(self, sealed: bytes) -> bytes | None:
        """The plain bytes, or None when they were not sealed with this key (MCPHUB_SECRET_KEY changed)."""
        try:
            return self._stored.decrypt(sealed)
        except InvalidToken:
            return None

    def link(self, plain: bytes) -> str:
        return self._links.encrypt(plain).decode("ascii")

    def open_link(self, token: str, ttl: float) -> bytes | None:
        """The link's bytes; None when it was not made here, was altered, or is older than `ttl` seconds."""
        try:
            return self._links.decrypt(token.encode("ascii"), ttl=int(ttl))
        except (InvalidToken, UnicodeEncodeError, ValueError):
            return None


def _derive(material: bytes, purpose: bytes) -> bytes:
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose).derive(material)
    return base64.urlsafe_b64encode(key)


class SecretStore(Protocol):
    """Bytes by name (always ciphertext), with optional expiry; `claim` marks a name used, once."""

    async def get(self, key: str) -> bytes | None: ...

    async def put(self, key: str, value: bytes, ttl: float | None = None) -> None: ...

    async def delete(self, key: str) -> None: ...

    async def claim(self, key: str, ttl: float) -> bool:
        """True the first time `key` is claimed (within `ttl` seconds), False every later time."""
        ...

    async def names(self, prefix: str) -> list[str]:
        """The keys that start with `prefix`."""
        ...

    def lock(self, key: str, ttl: float) -> AbstractAsyncContextManager[None]:
        """Held by one task of every process sharing the store; a holder that dies holding it loses it after
        `ttl` seconds. A waiter gives up with TimeoutError after twice that."""
        ...


class MemoryStore:
    """A `SecretStore` in this process (lost on restart: users connect again)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._items: dict[str, tuple[bytes, float | None]] = {}
        self._clock = clock
        self._locks: dict[str, anyio.Lock] = {}

    async def get(self, key: str) -> bytes | None:
        found = self._items.get(key)
        if found is None:
            return None
        value, until = found
        if until is not None and until <= self._clock():
            del self._items[key]
            return None
        return value

    async def put(self, key: str, value: bytes, ttl: float | None = None) -> None:
        self._items.pop(key, None)
        self._items[key] = (value, None if ttl is None else self._clock() + ttl)
        self._bound()

    async def delete(self, key: str) -> None:
        self._items.pop(key, None)

    async def claim(self, key: str, ttl: float) -> bool:
        if await self.get(key) is not None:
            return False
        await self.put(key, b"1", ttl)
        return True

    async def names(self, prefix: str) -> list[str]:
        now = self._clock()
        return [k for k, (_, until) in self._items.items() if k.startswith(prefix) and (until is None or until > now)]

    @asynccontextmanager
    async def lock(self, key: str, ttl: float) -> AsyncIterator[None]:
        lock = self._locks.setdefault(key, anyio.Lock())
        with anyio.fail_after(2 * ttl):
            await lock.acquire()
        try:
            yield
        finally:
            lock.release()

    def raw(self) -> dict[str, bytes]:
        """Every stored value as held (tests check that it is ciphertext)."""
        return {k: v for k, (v, _) in self._items.items()}

    def _bound(self) -> None:
        if len(self._items) <= MAX_MEMORY_ENTRIES:
            return
        now = self._clock()
        for key in [k for k, (_, until) in self._items.items() if until is not None and until <= now]:
            del self._items[key]
        while len(self._items) > MAX_MEMORY_ENTRIES:
            del self._items[next(iter(self._items))]


class RedisStore:
    """A `SecretStore` in the hub's Redis (`hub.state`): a user's connection holds for every replica.
    Values are Fernet tokens (ASCII), so the store's `decode_responses` client carries them as text."""

    def __init__(self, client: redis.Redis) -> None:
        self._redis = client

    async def get(self, key: str) -> bytes | None:
        value = await self._redis.get(REDIS_PREFIX + key)
        return None if value is None else str(value).encode("ascii")

    async def put(self, key: str, value: bytes, ttl: float | None = None) -> None:
        await self._redis.set(REDIS_PREFIX + key, value.decode("ascii"),
                              px=None if ttl is None else max(1, int(ttl * 1000)))

    async def delete(self, key: str) -> None:
        await self._redis.delete(REDIS_PREFIX + key)

    async def claim(self, key: str, ttl: float) -> bool:
        return bool(await self._redis.set(REDIS_PREFIX + key, "1", nx=True, px=max(1, int(ttl * 1000))))

    @asynccontextmanager
    async def lock(self, key: str, ttl: float) -> AsyncIterator[None]:
        name, mine = REDIS_PREFIX + "lock/" + key, secrets.token_hex(16)
        with anyio.fail_after(2 * ttl):
            while not await self._redis.set(name, mine, nx=True, px=max(1, int(ttl * 1000))):
                await anyio.sleep(LOCK_POLL)
        try:
            yield
        finally:
            with anyio.CancelScope(shield=True):
                await self._redis.eval(_RELEASE, 1, name, mine)

    async def names(self, prefix: str) -> list[str]:
        found = []
        async for name in self._redis.scan_iter(match=REDIS_PREFIX + _glob_escape(prefix) + "*", count=500):
            found.append(str(name)[len(REDIS_PREFIX):])
        return found


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)
