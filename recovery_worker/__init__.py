"""Recovery worker: sweeps payments stuck in refunding, requires_manual_review, or pending with
no provider answer, and drives them to a terminal state through the services' gRPC APIs.

Not built yet: the sweeps arrive with their own issue. Until then the package holds only its
entrypoint, which says so and exits non-zero so no deployment mistakes it for a working worker.
"""
