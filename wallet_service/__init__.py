"""Wallet service: accounts and their double-entry ledger."""
