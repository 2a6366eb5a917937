"""`python -m connectors.okta` runs the Okta connector."""

from .server import main

main()
