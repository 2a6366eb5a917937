"""`python -m connectors.servicenow` runs the ServiceNow connector."""

from connectors.servicenow.server import main

main()
