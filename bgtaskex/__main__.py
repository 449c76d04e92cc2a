"""`python -m bgtaskex` is the `bgtaskex` command."""

from bgtaskex.cli import main

main()
