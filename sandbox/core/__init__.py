"""Service-independent machinery of the sandbox: state, clock, faults, throttling, registry."""
