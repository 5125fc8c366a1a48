"""`python -m modelseal` runs the CLI."""

from modelseal._cli import run

run()
