"""The gateway's use cases, wired to one unit of work and one set of providers: what the gRPC
servicer serves and the process runs.

    operations  charge, payout, refund, get_operation      (service_layer/operations.py)
    inbox       provider events, recorded once and applied  (service_layer/inbox.py)
    sync        asking a provider what became of one        (service_layer/sync.py)
    breakers    breaker transitions published, breaker state (service_layer/breaker_events.py)
"""

from __future__ import annotations

from gateway_service.service_layer.breaker_events import BreakerEvents
from gateway_service.service_layer.inbox import ProviderEventInbox
from gateway_service.service_layer.operations import Operations
from gateway_service.service_layer.ports import UnitOfWorkFactory
from gateway_service.service_layer.providers import ProviderRouter
from gateway_service.service_layer.sync import StatusSync


class GatewayService:
    def __init__(
        self,
        *,
        uow: UnitOfWorkFactory,
        providers: ProviderRouter,
        sync_not_found_grace_s: float = 60.0,
        group_commit: bool = False,
    ) -> None:
        self.operations = Operations(uow=uow, providers=providers, group_commit=group_commit)
        self.inbox = ProviderEventInbox(uow=uow, providers=providers)
        self.sync = StatusSync(
            uow=uow,
            providers=providers,
            operations=self.operations,
            not_found_grace_s=sync_not_found_grace_s,
        )
        self.breakers = BreakerEvents(uow=uow, providers=providers)
