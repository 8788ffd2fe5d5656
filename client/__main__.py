"""`python -m digitq.client` runs the `digitq` command line."""

from digitq.client.cli import main

main()
