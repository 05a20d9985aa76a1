"""The channel between our services: retries of UNAVAILABLE and round robin over a target's
addresses, so several replicas of a service each take their share of its calls."""

from __future__ import annotations

import json
from collections.abc import Callable

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pydantic import ValidationError

from common.config import Settings
from common.grpc.auth import bearer_channel
from common.grpc.client import LB_POLICY, channel_options, create_channel
from common.grpc.server import create_server
from tests.tokens import make_authenticator, make_token


def _service_config() -> dict[str, object]:
    options = dict(channel_options())
    config = json.loads(str(options["grpc.service_config"]))
    assert isinstance(config, dict)
    return config


def test_channels_balance_round_robin_over_every_address_of_their_target() -> None:
    assert LB_POLICY == "round_robin"
    assert _service_config()["loadBalancingConfig"] == [{"round_robin": {}}]


def test_channels_still_retry_unavailable_and_reconnect_quickly() -> None:
    options = dict(channel_options())
    assert options["grpc.enable_retries"] == 1
    assert options["grpc.max_reconnect_backoff_ms"] == 1000
    (method,) = _service_config()["methodConfig"]  # type: ignore[misc]
    assert method["retryPolicy"]["retryableStatusCodes"] == ["UNAVAILABLE"]


async def test_a_channel_accepts_a_target_naming_several_replicas() -> None:
    channel = create_channel("ipv4:127.0.0.1:1,127.0.0.1:2")
    await channel.close()


@pytest.mark.parametrize(
    "target",
    [
        "127.0.0.1:50052",
        "wallet:50052",
        "ipv4:127.0.0.1:50052,127.0.0.1:50062",
        "ipv6:[::1]:50052,[::1]:50062",
        "dns:///wallet.paysuite.svc.cluster.local:50052",
    ],
)
def test_targets_may_be_an_address_or_a_grpc_name_resolver_target(target: str) -> None:
    assert Settings(wallet_target=target).wallet_target == target


@pytest.mark.parametrize(
    "target", ["nowhere", "ipv4:127.0.0.1", "ipv4:127.0.0.1:1,nowhere", "dns:///", "wallet:x"]
)
def test_a_malformed_target_is_refused(target: str) -> None:
    with pytest.raises(ValidationError, match="wallet_target"):
        Settings(wallet_target=target)


async def _serve(port: int) -> tuple[grpc.aio.Server, int]:
    server, bound, _ = create_server(
        f"127.0.0.1:{port}", registrars=[], service_names=[], auth=make_authenticator()
    )
    await server.start()
    return server, bound


async def _check(channel: grpc.aio.Channel) -> None:
    stub = health_pb2_grpc.HealthStub(channel)
    await stub.Check(health_pb2.HealthCheckRequest())  # type: ignore[attr-defined]  # typeshed stub lists no methods


@pytest.mark.parametrize(
    "open_channel",
    [create_channel, lambda target: bearer_channel(target, make_token())],
    ids=["create_channel", "bearer_channel"],
)
async def test_a_new_channel_dials_for_itself_where_an_old_one_waits_out_a_backoff(
    open_channel: Callable[[str], grpc.aio.Channel],
) -> None:
    """Port 0 hands a stopped server's port to the next one. A channel of the same kind still
    open to the old server must not fail a new channel's first call: shared connections made
    a gateway servicer test fail with UNAVAILABLE once in a full run."""
    first, port = await _serve(0)
    async with open_channel(f"127.0.0.1:{port}") as stale:
        await _check(stale)
        await first.stop(None)
        with pytest.raises(grpc.aio.AioRpcError):
            await _check(stale)  # its connection to the port now waits out gRPC's backoff
        second, _ = await _serve(port)
        try:
            async with open_channel(f"127.0.0.1:{port}") as fresh:
                await _check(fresh)
        finally:
            await second.stop(None)
