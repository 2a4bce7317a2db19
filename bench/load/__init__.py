"""Load benchmark: ``python -m bench.load`` (see __main__.py and bench/README.md)."""
