"""A policy that acts through a policy server: tau-sim's Policy protocol (reset(); act(obs, prompts)) over openpi's
websocket protocol, for evaluating a served policy with tau-sim (duck-typed: tau-policy does not import tau-sim).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from typing import Any

import numpy as np
from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.sync.client import connect

from tau_policy.serving import wire
from tau_policy.serving.keys import ObservationKeys


class RemotePolicyError(RuntimeError):
    """The server refused, failed or closed: its error text or close reason is in the message."""


class RemotePolicy:
    """Sends each env's observation of a tau-sim batch as one openpi request; stacks the replies' action chunks.

    The request keys are the server's own (its metadata's observation keys), so any preset whose state is one key
    works; tau-sim's {"images": (B, N_cam, H, W, 3), state_key: (B, D)} is split per env and renamed onto them.
    Like tau_policy.SimPolicy, env camera i feeds the policy's camera slot i (slots its head lacks are not sent),
    and `state_key` defaults to the env entry the policy's training data was recorded from (its layout's
    sim_state_key).
    """

    def __init__(self, url: str, *, api_key: str | None = None, state_key: str | None = None,
                 timeout_s: float = 120.0) -> None:
        self.url, self.timeout_s = url, timeout_s
        headers = {"Authorization": f"Api-Key {api_key}"} if api_key else None
        self._exit = ExitStack()
        try:  # connect() is a context manager (websockets >= 17.1 warns otherwise); closed by close()
            self._connection = self._exit.enter_context(connect(url, compression=None, max_size=None,
                                                                additional_headers=headers, open_timeout=timeout_s))
        except (OSError, InvalidHandshake, TimeoutError) as error:
            raise RemotePolicyError(f"cannot connect to the policy server at {url}: {error}") from error
        self.metadata: dict[str, Any] = self._receive()
        try:
            description = self.metadata["server"]["observation_keys"]
        except (KeyError, TypeError) as error:
            self.close()
            raise RemotePolicyError(f"{url} sent no observation keys in its metadata: not a tau policy "
                                    "server") from error
        self.keys = ObservationKeys.from_description(description, source=f"{url} observation keys")
        layout = self.metadata.get("layout") or {}
        self.state_key: str = state_key or layout.get("sim_state_key", "state")
        self.camera_slots: list[str | None] | None = layout.get("cameras")  # None: a server without a layout
        if len(self.keys.state) != 1:
            self.close()
            raise RemotePolicyError(f"{url} reads the state from {len(self.keys.state)} keys "
                                    f"{list(self.keys.state)}; remote evaluation needs a server whose state is one "
                                    "key (e.g. --keys tau-sim or libero)")

    def _receive(self) -> Any:
        try:
            frame = self._connection.recv(timeout=self.timeout_s)
        except ConnectionClosed as error:
            raise RemotePolicyError(f"the policy server at {self.url} closed the connection: {error}") from error
        except TimeoutError as error:
            raise RemotePolicyError(f"no reply from the policy server at {self.url} in {self.timeout_s} s") \
                from error
        if isinstance(frame, str):
            raise RemotePolicyError(f"the policy server at {self.url} failed: {frame}")
        return wire.unpack(frame)

    def request(self, images: np.ndarray, state: np.ndarray, prompt: str) -> dict[str, Any]:
        """One env's request under the server's keys: images (N_cam, H, W, 3), state (D,), the instruction."""
        keys = self.keys
        if keys.channels_first:
            images = np.moveaxis(images, -1, 1)
        if keys.stacked_images is not None:
            request: dict[str, Any] = {keys.stacked_images: images}
        elif len(keys.cameras) != len(images):
            raise ValueError(f"the observation has {len(images)} cameras, the server reads {len(keys.cameras)} "
                             f"{list(keys.cameras)}")
        else:
            request = dict(zip(keys.cameras, images, strict=True))
        request[keys.state[0]] = np.asarray(state, dtype=np.float32)
        request[keys.prompt] = str(prompt)
        return request

    def reset(self) -> None:
        """Nothing to clear: the server acts on each observation alone."""

    def act(self, observation: Mapping[str, np.ndarray], prompts: Sequence[str]) -> np.ndarray:
        """float32 (B, chunk, action_dim): the B requests are sent back to back, then the B replies read in order."""
        images = np.asarray(observation["images"])
        if self.state_key not in observation:
            raise KeyError(f"observation has no {self.state_key!r} entry (it has {sorted(observation)})")
        state = np.asarray(observation[self.state_key])
        if self.camera_slots is not None and images.ndim == 5:
            if images.shape[1] != len(self.camera_slots):
                raise ValueError(f"observation has {images.shape[1]} cameras, the served policy has "
                                 f"{len(self.camera_slots)} camera slots {self.camera_slots}")
            images = images[:, [i for i, camera in enumerate(self.camera_slots) if camera is not None]]
        if images.ndim != 5 or len(images) != len(prompts) or len(state) != len(prompts):
            raise ValueError(f"expected images (B, N_cam, H, W, 3) and state (B, D) for B={len(prompts)} prompts, "
                             f"got {images.shape} and {state.shape}")
        try:
            for i, prompt in enumerate(prompts):
                self._connection.send(wire.pack(self.request(images[i], state[i], prompt)))
        except ConnectionClosed as error:
            raise RemotePolicyError(f"the policy server at {self.url} closed the connection: {error}") from error
        replies = [self._receive() for _ in prompts]
        return np.stack([np.asarray(reply["actions"], dtype=np.float32) for reply in replies])

    def close(self) -> None:
        """Close the connection (normal closure)."""
        self._exit.close()

    def __enter__(self) -> RemotePolicy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
