"""`python -m mesh` is `agentmesh`."""

from mesh.cli import main

main()
