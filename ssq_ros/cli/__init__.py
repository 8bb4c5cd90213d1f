"""Command-line tools (console entry points declared in setup.py)."""
