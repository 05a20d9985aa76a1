"""Load generators for `make bench`: each module drives running services and returns figures."""
