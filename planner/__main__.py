"""`python -m planner` runs the planner service."""

from planner.server import main

main()
