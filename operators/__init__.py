"""App operators of the FA-Seg plugin (registered by the repository root __init__.py)."""
