"""Entry points: ``python -m jobs.<name> [CONFIG] [key=value ...]``."""
