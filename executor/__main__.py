"""`python -m executor` runs the executor service."""

from executor.server import main

main()
