"""`python -m gatekit.cli`: the `gatekit` command."""

from gatekit.cli import main

main()
