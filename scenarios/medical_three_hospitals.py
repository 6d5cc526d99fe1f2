"""Three hospitals detect liver lesions on CT: `python scenarios/medical_three_hospitals.py [--data DIR] ...`."""

import sys

from flcore.cli import main

if __name__ == "__main__":
    sys.exit(main(["run", "medical-three-hospitals", *sys.argv[1:]]))
