"""What runs the worker: the loop that takes each sweep under its lease once per interval, and
the gRPC server that serves only health and reflection."""
