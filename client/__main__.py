"""`python -m digitq.client` runs the `digitq` command line."""

from digitq.client.cli import main

if __name__ == "__main__":
    main()
