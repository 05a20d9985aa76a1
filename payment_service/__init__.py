"""Payment service: orchestrates deposits, withdrawals, transfers and refunds."""
