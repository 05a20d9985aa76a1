"""Channel options every channel of ours shares, in a module of its own: the service
channels (common.grpc.client) and the plain bearer channels (common.grpc.auth) both take them."""

from __future__ import annotations

# Each channel keeps its own connections: by default gRPC shares them across the process, keyed
# by address, with their reconnect state. A channel left open to a stopped server holds that
# address in backoff, and a new channel to a new server on the same port (port 0 hands out
# freed ports again) then fails its first calls with UNAVAILABLE without dialling.
OWN_CONNECTIONS: list[tuple[str, int]] = [("grpc.use_local_subchannel_pool", 1)]
