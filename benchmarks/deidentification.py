"""De-identification check against a standard PS3.15 tool, on pydicom's bundled real image files.

For every image file that ships with pydicom (CT, MR, US, NM, secondary captures, in
every transfer syntax pydicom bundles), it counts the check's findings as the file
ships, then after ``dicom-anonymizer`` (PS3.15 basic profile, default settings) has
de-identified it in memory. A sound check reports identifiers before and nothing after.

Run: ``.venv/bin/python benchmarks/deidentification.py [--json out.json]`` (a few seconds).
"""

from __future__ import annotations

import argparse
import logging
import warnings
from pathlib import Path

from common import print_machine, table, write_json
from dicomanonymizer import anonymize_dataset
from pydicom import dcmread
from pydicom.data import get_testdata_files
from pydicom.errors import InvalidDicomError

from domains.medical.adapters.deid import identifier_findings
from domains.medical.adapters.pixels import image_problem


def main() -> None:
    """Print findings per file before and after the standard tool; optionally write them as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args()
    warnings.simplefilter("ignore")  # pydicom warns about odd values in its own test files
    logging.disable(logging.WARNING)  # the tool logs every element it changes
    print_machine()
    rows = []
    for name in sorted(get_testdata_files("*.dcm")):
        try:
            ds = dcmread(name, force=True)
        except (InvalidDicomError, OSError, ValueError, EOFError):
            continue  # pydicom's deliberately broken samples
        if image_problem(ds, Path(name)) is not None:
            continue  # not an image the adapter would read (SR, RT, SEG, waveforms)
        before = len(identifier_findings(ds, name))
        anonymize_dataset(ds)
        rows.append({"file": Path(name).name, "before": before, "after": len(identifier_findings(ds, name))})
    print(table(["file", "findings as shipped", "after dicom-anonymizer"], [list(r.values()) for r in rows]))
    total = {k: sum(r[k] for r in rows) for k in ("before", "after")}
    print(f"\n{len(rows)} image files: {total['before']} findings as shipped, {total['after']} after the tool")
    if args.json:
        write_json(args.json, {"files": rows, "total": total})


if __name__ == "__main__":
    main()
