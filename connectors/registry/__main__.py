"""`python -m connectors.registry` runs the registry service."""

from connectors.registry.server import main

main()
