"""The bench's bearer token: a service's, minted with the suite's key, presented by every
channel (common.grpc.auth.bearer_channel: one metadata-only interceptor, which the baseline
calls carry too, so the ratios compare like with like)."""

from __future__ import annotations

from common.auth import Role
from common.config import Settings
from common.tokens import mint_for, with_local_key

TOKEN_TTL_S = 6 * 3600


def bench_token(settings: Settings) -> str:
    return mint_for(
        with_local_key(settings), subject="service:bench", roles=(Role.SERVICE,), ttl_s=TOKEN_TTL_S
    )
