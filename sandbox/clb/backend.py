"""clb state and rules."""
