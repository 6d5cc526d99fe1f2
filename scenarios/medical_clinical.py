"""Three hospitals share a breast-cancer risk model: `python scenarios/medical_clinical.py [--data DIR] ...`."""

import sys

from flcore.cli import main

if __name__ == "__main__":
    sys.exit(main(["run", "medical-clinical", *sys.argv[1:]]))
