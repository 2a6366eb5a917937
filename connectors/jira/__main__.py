"""`python -m connectors.jira` runs the Jira connector server."""

from connectors.jira.server import main

main()
