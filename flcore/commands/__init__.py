"""What each `flsuite` command does; the parser in flcore/cli.py dispatches here."""

# A command imports the flcore modules that load torch, Flower, pandas or the scenarios
# inside its own body, so that each command loads only what it uses.
