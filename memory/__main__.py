"""`python -m memory` runs the memory service."""

from memory.server import main

main()
