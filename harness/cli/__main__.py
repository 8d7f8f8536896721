"""`python -m harness.cli`: what the `harness` console script runs (local workers start it so)."""
from . import main

main()
