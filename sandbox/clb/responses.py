"""clb actions."""
