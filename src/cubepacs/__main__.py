"""``python -m cubepacs`` runs the command line."""

from cubepacs.cli import main

main()
