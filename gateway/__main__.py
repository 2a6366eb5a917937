"""`python -m gateway` runs the gateway."""

from gateway.server import main

main()
