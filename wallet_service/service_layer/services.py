"""The wallet service: every use case, each in the module named after it.

- accounts.py: open, read, freeze, unfreeze, close;
- postings.py: credit, debit, transfer;
- holds.py: place, capture, release, read, expire;
- queries.py: an account's entries, the journal by ref and in time order;
- rates.py: FX rates.

mutations.py holds the one shape they all run through (lock, replay or decide, record,
commit), ports.py what they need from the outside.
"""

from __future__ import annotations

from wallet_service.service_layer.holds import Holds
from wallet_service.service_layer.postings import Postings
from wallet_service.service_layer.queries import Queries
from wallet_service.service_layer.rates import Rates


class WalletService(Postings, Holds, Queries, Rates):
    """Built with a unit of work factory and, in the running service, group commit on and
    its metrics as `observe` (see wallet_service.service_layer.mutations.Mutations)."""
