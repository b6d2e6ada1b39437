"""vpc state and rules."""
