"""`./pants run apps/serve -- [--policy DIR] [--keys PRESET|FILE.json] [--host H] [--port P] [--api-key K]`:
serve a trained policy bundle (tau_policy.load_policy) to robots over openpi's websocket protocol (call it with
openpi_client's WebsocketClientPolicy, or evaluate it with `apps/eval --server`). Stops cleanly on SIGTERM / SIGINT.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import sys
from pathlib import Path

import click
from tau_policy import load_policy
from tau_policy.serving import (
    API_KEY_ENV,
    DEFAULT_MAX_MESSAGE_BYTES,
    HEALTH_PATH,
    PRESETS,
    PolicyServer,
    resolve_keys,
    serve_until_signal,
)

DEFAULT_POLICY = Path("outputs/default/train/policy")

log = logging.getLogger("serve_app")


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--policy", "policy_path", default=str(DEFAULT_POLICY), show_default=True,
              help="Policy bundle folder (written by apps/train or apps/rl) or hub id.")
@click.option("--keys", "keys_name", default="libero", show_default=True,
              help=f"Where requests hold the cameras, state and prompt: a preset ({', '.join(PRESETS)}) or a "
                   "JSON file of ObservationKeys fields (see tau_policy.serving.keys).")
@click.option("--default-prompt", default=None, help="Instruction used when a request has no prompt.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind; 0.0.0.0 exposes the server to the network (set an API key).")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535),
              help="Port to bind; 0 picks a free one (printed on start).")
@click.option("--api-key", default=None, envvar=API_KEY_ENV, show_envvar=True,
              help="Require the header 'Authorization: Api-Key <key>' (openpi_client's api_key=...).")
@click.option("--max-message-mb", default=DEFAULT_MAX_MESSAGE_BYTES / 2**20, show_default=True,
              type=click.FloatRange(min=0, min_open=True), help="Largest request accepted, in MiB.")
@click.option("--head", default=None,
              help="Which robot of a mixture policy to serve (norm head, robot type or dataset name).")
@click.option("--device", default="cpu", show_default=True, help="Torch device of the model.")
@click.option("--seed", default=0, show_default=True,
              help="Seed of the policy's flow-sampling noise (requests draw from it in arrival order; `apps/eval "
                   "--server` with one env matches local evaluation when this is its --seed).")
@click.option("--inference-steps", default=None, type=click.IntRange(min=1),
              help="Euler steps of flow sampling (default: the model's).")
@click.option("-v", "--verbose", is_flag=True,
              help="Log at INFO level (connections, start, shutdown); errors are always logged.")
def main(policy_path: str, keys_name: str, default_prompt: str | None, host: str, port: int,
         api_key: str | None, max_message_mb: float, head: str | None, device: str, seed: int,
         inference_steps: int | None, verbose: bool) -> None:
    """Serve a trained policy (default: the latest `apps/train` run) to openpi clients."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        keys = resolve_keys(keys_name)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--keys") from error
    if default_prompt is not None:
        keys = dataclasses.replace(keys, default_prompt=default_prompt)
    try:
        policy = load_policy(policy_path, head=head, device=device, seed=seed, num_inference_steps=inference_steps)
    except (FileNotFoundError, ValueError) as error:
        raise click.ClickException(f"cannot load the policy {policy_path}: {error}") from error
    try:
        server = PolicyServer(policy, keys, host=host, port=port, api_key=api_key,
                              max_message_bytes=int(max_message_mb * 2**20))
    except ValueError as error:
        raise click.ClickException(f"cannot serve {policy_path} with --keys {keys_name}: {error}") from error
    if api_key is None and not _is_loopback(host):
        log.warning("serving on %s without an API key: anyone who reaches this port can drive the policy", host)

    def ready(url: str) -> None:
        health = url.replace("ws://", "http://") + HEALTH_PATH
        click.echo(f"serving {policy_path} on {url} (health: {health}; keys: {keys_name}"
                   f"{'; API key required' if api_key else ''}); stop with Ctrl-C or SIGTERM")
        sys.stdout.flush()

    serve_until_signal(server, on_ready=ready)
    click.echo("policy server stopped")


if __name__ == "__main__":
    sys.exit(main())
