"""The ports' real implementations: gRPC clients of the services, and Redis."""
