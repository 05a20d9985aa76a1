"""Running a whole suite on one machine, and looking into it: the embedded PostgreSQL and Redis,
the supervisor that starts and heals the processes, and the reads of the event pipeline.

`paysuite up`, the bench and chaos all stand on it; it imports none of them, so none of those
apps depends on another to start a suite.
"""
