"""`flsuite report`: report.md and a self-contained report.html for one run or a comparison of several."""

from __future__ import annotations

import argparse
from pathlib import Path

from flcore.outputs import check_output_dir
from flcore.reporting.report import write_report


def cmd_report(args: argparse.Namespace) -> int:
    """`flsuite report RUN_DIR [RUN_DIR ...]`: report.md and a self-contained report.html."""
    folders = [Path(f) for f in args.run_dirs]
    # One run: its own folder (the folder of a results.json named directly).
    single = folders[0].parent if folders[0].suffix == ".json" else folders[0]
    out = Path(args.out) if args.out else single if len(folders) == 1 else Path("runs/comparison")
    check_output_dir(out, what="the report (report.md, report.html)")
    paths = write_report(folders, out)
    print("report: " + ", ".join(str(p) for p in paths))
    return 0
