"""`python -m distil` runs the command line (also under torchrun)."""

from distil.cli import main

main()
