"""The webhook adapter: providers' signed callbacks in, GatewayService.HandleProviderEvent out;
and, in the same process, the HTTP facade of seeds 000/001 in front of PaymentService.

Its own process (`python -m webhook_adapter`); it shares nothing with the gateway
service but the gRPC contracts.
"""

from webhook_adapter.app import create_app, start

__all__ = ["create_app", "start"]
