"""The webhook adapter: providers' signed callbacks in, GatewayService.HandleProviderEvent out.

Its own process (`python -m gateway_service.webhook`); it shares nothing with the gateway
service but the gRPC contract.
"""

from gateway_service.webhook.app import create_app, start

__all__ = ["create_app", "start"]
