"""The `paysuite` command line: run the suite, migrate, demo, inspect."""
