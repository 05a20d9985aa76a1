"""gRPC transport building blocks shared by every service."""
