"""Shared test helpers (imported as ``helpers``: tests/ is on sys.path under pytest)."""
