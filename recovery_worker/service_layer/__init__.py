"""The sweeps and the loop that runs them, written against the ports in `ports`."""
