"""`python -m connectors.salesforce` runs the Salesforce connector server."""

from connectors.salesforce.server import main

main()
