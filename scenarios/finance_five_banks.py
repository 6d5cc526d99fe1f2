"""Five banks detect card fraud together: `python scenarios/finance_five_banks.py [--data DIR] [--rounds N] ...`."""

import sys

from flcore.cli import main

if __name__ == "__main__":
    sys.exit(main(["run", "finance-five-banks", *sys.argv[1:]]))
