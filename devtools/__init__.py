"""Development helpers used by the Makefile (not part of the deployed service)."""
