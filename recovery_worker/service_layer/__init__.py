"""The sweeps, written against the ports in `ports`."""
