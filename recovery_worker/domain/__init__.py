"""What the recovery worker decides, in plain Python: no gRPC, no Redis."""
