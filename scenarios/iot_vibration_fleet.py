"""A fleet of 200 machines learns vibration anomaly detection: `python scenarios/iot_vibration_fleet.py [--data D]`."""

import sys

from flcore.cli import main

if __name__ == "__main__":
    sys.exit(main(["run", "iot-vibration-fleet", *sys.argv[1:]]))
