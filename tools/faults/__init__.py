"""Fault injection: a controllable broker link, replicas as processes, scenarios, the soak."""
