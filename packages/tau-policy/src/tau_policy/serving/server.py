"""The policy server: openpi's websocket protocol in front of one policy.

Protocol (openpi_client 0.1.2's WebsocketClientPolicy): the client connects (optionally with an
`Authorization: Api-Key <key>` header); the server first sends its metadata as one binary msgpack frame; then each
binary frame the client sends is one observation map and gets one binary reply
`{"actions": float32 (chunk, action_dim) in robot units, "server_timing": {"decode_ms", "queue_ms", "infer_ms",
"prev_total_ms"}}`. On a bad request or a failure the server sends the error as a text frame and closes that
connection with code 1011 (internal error); other connections are unaffected. A wrong API key closes the
connection with code 1008 (policy violation) before any metadata. `GET /healthz` answers 200 "OK".

Inference runs on one worker thread, so requests from all connections queue in arrival order while the event loop
keeps answering pings, health checks and new connections.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import signal
import threading
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from http import HTTPStatus
from time import perf_counter
from typing import Any

import numpy as np
from websockets.asyncio.server import Request, Response, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode

from tau_policy.serving import wire
from tau_policy.serving.keys import PRESETS, ObservationKeys
from tau_policy.serving.policy import ServablePolicy
from tau_policy.serving.request import RequestError, check_camera_count, policy_observation

log = logging.getLogger(__name__)

DEFAULT_MAX_MESSAGE_BYTES = 16 * 2**20  # a few hundred uint8 224x224 images
HEALTH_PATH = "/healthz"
API_KEY_ENV = "TAU_SERVE_API_KEY"  # apps/serve and apps/eval --server read the API key from it
API_KEY_REJECTED = "invalid or missing API key: send the header 'Authorization: Api-Key <key>'"


def _close_reason(text: str) -> str:
    """The first line of `text`, cut to the 123 bytes a close frame's reason may hold."""
    line = text.splitlines()[0] if text else ""
    return line.encode()[:123].decode(errors="ignore")


class PolicyServer:
    """Serves `policy` to openpi clients; `keys` say where a request holds the cameras, state and prompt."""

    def __init__(self, policy: ServablePolicy, keys: ObservationKeys = PRESETS["libero"], *,
                 host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None,
                 max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> None:
        check_camera_count(keys, policy.layout, "the observation keys")
        if api_key is not None and not api_key.strip():
            raise ValueError("api_key must not be empty (pass None to serve without one)")
        if max_message_bytes < 1:
            raise ValueError(f"max_message_bytes must be positive, got {max_message_bytes}")
        if "server" in policy.metadata:
            raise ValueError("policy metadata must not have a 'server' entry: the server adds its own")
        self.policy, self.keys = policy, keys
        self.host, self.port = host, port
        self.api_key, self.max_message_bytes = api_key, max_message_bytes
        self.metadata: dict[str, Any] = {**policy.metadata, "server": {
            "protocol": "openpi-websocket", "observation_keys": keys.describe(),
            "max_message_bytes": max_message_bytes}}
        self._metadata_frame = wire.pack(self.metadata)

    def _health(self, connection: ServerConnection, request: Request) -> Response | None:
        if request.path.split("?", 1)[0] == HEALTH_PATH:
            return connection.respond(HTTPStatus.OK, "OK\n")
        return None

    def _authorized(self, connection: ServerConnection) -> bool:
        if self.api_key is None:
            return True
        sent = connection.request.headers.get("Authorization", "")
        return hmac.compare_digest(sent.encode(), f"Api-Key {self.api_key}".encode())

    def _act(self, observation: dict[str, np.ndarray], prompt: str,
             submitted: float) -> tuple[np.ndarray, float, float]:
        """On the worker thread: one policy call; returns (chunk, action_dim) actions, queue and inference seconds."""
        started = perf_counter()
        actions = np.asarray(self.policy.act(observation, [prompt]))
        layout = self.policy.layout
        expected = (1, layout.chunk_size, layout.action_dim)
        if actions.shape != expected:
            raise RuntimeError(f"policy.act returned actions of shape {actions.shape}, expected {expected}")
        return actions[0].astype(np.float32), started - submitted, perf_counter() - started

    async def _reply(self, message: str | bytes, worker: ThreadPoolExecutor, prev_total_ms: float | None) -> bytes:
        start = perf_counter()
        if isinstance(message, str):
            raise RequestError("requests must be binary msgpack frames, got a text frame")
        try:
            request = wire.unpack(message)
        except wire.FrameError as error:
            raise RequestError(f"request is not openpi msgpack: {error}") from error
        observation, prompt = policy_observation(request, self.keys, self.policy.layout)
        decoded = perf_counter()
        loop = asyncio.get_running_loop()
        actions, queue_s, infer_s = await loop.run_in_executor(worker, self._act, observation, prompt, decoded)
        timing = {"decode_ms": (decoded - start) * 1e3, "queue_ms": queue_s * 1e3, "infer_ms": infer_s * 1e3}
        if prev_total_ms is not None:
            timing["prev_total_ms"] = prev_total_ms
        return wire.pack({"actions": actions, "server_timing": timing})

    async def _fail(self, connection: ServerConnection, error: Exception) -> None:
        """Send the error as a text frame and close this connection with 1011; the server keeps serving."""
        if isinstance(error, RequestError):
            text = f"bad request: {error}"
            log.warning("%s: %s", connection.remote_address, text)
        else:
            trace = "".join(traceback.format_exception(error))
            text = f"policy server error: {type(error).__name__}: {error}\n{trace}"
            log.error("%s: %s", connection.remote_address, text)
        try:
            await connection.send(text)
            await connection.close(CloseCode.INTERNAL_ERROR, _close_reason(text))
        except ConnectionClosed:
            pass

    def _handler(self, worker: ThreadPoolExecutor) -> Callable[[ServerConnection], Any]:
        async def handle(connection: ServerConnection) -> None:
            if not self._authorized(connection):
                log.warning("%s: rejected: wrong or missing API key", connection.remote_address)
                await connection.close(CloseCode.POLICY_VIOLATION, API_KEY_REJECTED)
                return
            prev_total_ms = None
            try:
                await connection.send(self._metadata_frame)
                async for message in connection:
                    received = perf_counter()
                    try:
                        reply = await self._reply(message, worker, prev_total_ms)
                    except Exception as error:  # any failure ends this connection only, with the error text
                        await self._fail(connection, error)
                        return
                    await connection.send(reply)
                    prev_total_ms = (perf_counter() - received) * 1e3
            except ConnectionClosed:
                pass

        return handle

    async def run(self, stop: asyncio.Event, on_ready: Callable[[str], None] | None = None) -> None:
        """Serve until `stop` is set, then close every connection (1001, going away) and finish queued requests."""
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="tau-policy-infer") as worker:
            async with serve(self._handler(worker), self.host, self.port, compression=None,
                             max_size=self.max_message_bytes, process_request=self._health) as server:
                self.port = server.sockets[0].getsockname()[1]
                log.info("serving on %s", self.url)
                if on_ready is not None:
                    on_ready(self.url)
                await stop.wait()
                log.info("shutting down")

    @property
    def url(self) -> str:
        """ws://host:port (the port is the bound one once running, also when 0 asked for a free port)."""
        return f"ws://{self.host}:{self.port}"


def serve_until_signal(server: PolicyServer, on_ready: Callable[[str], None] | None = None) -> None:
    """Run `server` in this thread until SIGTERM or SIGINT, then shut it down cleanly."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await server.run(stop, on_ready)

    asyncio.run(main())


class ServerThread:
    """A PolicyServer on its own event loop in a background thread: `with ServerThread(server) as s: s.url`."""

    def __init__(self, server: PolicyServer, start_timeout_s: float = 30.0) -> None:
        self.server, self.start_timeout_s = server, start_timeout_s
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._main, name="tau-policy-server", daemon=True)

    def _main(self) -> None:
        async def main() -> None:
            self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
            await self.server.run(self._stop, lambda _: self._ready.set())

        try:
            asyncio.run(main())
        except BaseException as error:  # reported to the thread that started the server
            self._error = error
            self._ready.set()

    @property
    def url(self) -> str:
        return self.server.url

    def __enter__(self) -> ServerThread:
        self._thread.start()
        if not self._ready.wait(self.start_timeout_s):
            raise TimeoutError(f"policy server did not start within {self.start_timeout_s} s")
        if self._error is not None:
            raise RuntimeError(f"policy server failed to start: {self._error}") from self._error
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=60)
