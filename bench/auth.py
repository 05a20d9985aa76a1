"""The bench's bearer token: a service's, minted with the suite's key, presented by every
channel through one metadata-only interceptor (the baseline calls carry it too, so the
ratios compare like with like)."""

from __future__ import annotations

import grpc

from common.auth import Role
from common.config import Settings
from common.grpc.auth import bearer_interceptors
from common.tokens import mint_for, with_local_key

TOKEN_TTL_S = 6 * 3600


def bench_token(settings: Settings) -> str:
    return mint_for(
        with_local_key(settings), subject="service:bench", roles=(Role.SERVICE,), ttl_s=TOKEN_TTL_S
    )


def bench_channel(target: str, token: str) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(target, interceptors=bearer_interceptors(lambda: token))
