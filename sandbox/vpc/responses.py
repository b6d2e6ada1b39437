"""vpc actions."""
