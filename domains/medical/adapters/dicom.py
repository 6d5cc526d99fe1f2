"""Reads a hospital's DICOM images and labels manifest with pydicom, validated at the boundary.

Contract, per hospital folder:

* DICOM files at any depth (any file name; hidden files and text, table and
  configuration files such as ``.csv``, ``.txt``, ``.json`` or ``.toml`` are not
  DICOM candidates; any other file is, and one that cannot be read is reported);
* ``labels.csv`` with a ``label`` column (1 = finding present, 0 = absent), one of
  ``file`` (path relative to the folder) or ``sop_instance_uid`` (or both, a row
  using whichever it fills), and optionally ``consent`` (yes/no). Rows without
  consent are dropped before their file is opened.

Every header is checked for identifiers (:mod:`domains.medical.adapters.deid`, under
the de-identification the site's ``policy.toml`` declares) and for what it holds: only
images of the patient are read, decoded as :mod:`domains.medical.adapters.pixels` says.

Decoded arrays are cached (:mod:`domains.medical.adapters.dicom_cache`), keyed by every
input file's size and modification time and by the decoding settings, so a second run
does not decode again.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from pydicom import dcmread

from domains.medical.adapters.deid import DeidRules, identifier_findings, unreadable_finding
from domains.medical.adapters.dicom_cache import cache_key, cache_root, load_site, save_site
from domains.medical.adapters.dicom_files import candidate_files, quiet_values, uid_index, unreadable
from domains.medical.adapters.pixels import MAX_IMAGE_BYTES, ConstantImageError, decoder_error, image_problem, to_image
from flcore.data.files import describe_error
from flcore.data.manifest import read_manifest
from flcore.data.site import Problem, SiteData
from flcore.data.validation import parse_consent
from flcore.exceptions import DataValidationError, FlsuiteError
from flcore.governance.policy import GovernancePolicy, site_policy
from flcore.governance.rules import Finding

MANIFEST = "labels.csv"


def rules_for(site_dir: Path, policy: GovernancePolicy | None = None) -> DeidRules:
    """The de-identification a site declares: ``policy``, else its folder's ``policy.toml``."""
    return DeidRules.of(policy if policy is not None else site_policy(Path(site_dir), GovernancePolicy()))


# --------------------------------------------------------------------------------------
# The adapter
# --------------------------------------------------------------------------------------


@dataclass
class _Scan:
    """What a pass over the manifest and the headers found."""

    records: list[tuple[str, int]] = field(default_factory=list)  # (relative path, label)
    problems: list[Problem] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    no_consent: int = 0
    consent_recorded: bool = False


class DicomAdapter:
    """Domain adapter for DICOM imaging sites (see the module docstring for the contract).

    Parameters
    ----------
    image_size : int
        Side of the square images handed to the model.
    frames : {"middle", "mean", "max"}
        How multi-frame files become one image.
    require_consent : bool
        Refuse a manifest without a ``consent`` column.
    use_cache : bool
        Cache decoded arrays between runs.
    max_image_bytes : int
        Largest decoded image a header may claim; larger ones are refused before decoding.
    """

    layout = (
        "each hospital folder holds DICOM files (any depth) and labels.csv with a 'label' column (0/1), "
        "a 'file' (relative path) or 'sop_instance_uid' column, and optionally 'consent' (yes/no)"
    )

    def __init__(
        self,
        image_size: int = 64,
        frames: str = "middle",
        require_consent: bool = False,
        use_cache: bool = True,
        max_image_bytes: int = MAX_IMAGE_BYTES,
    ) -> None:
        if frames not in ("middle", "mean", "max"):
            raise ValueError(f"frames must be middle, mean or max, got {frames!r}")
        self.image_size = image_size
        self.frames = frames
        self.require_consent = require_consent
        self.use_cache = use_cache
        self.max_image_bytes = max_image_bytes

    def can_read(self, site_dir: Path) -> bool:
        """Whether the folder holds a ``labels.csv`` manifest."""
        return (Path(site_dir) / MANIFEST).is_file()

    # -- manifest ----------------------------------------------------------------------

    def _manifest(self, site_dir: Path) -> pd.DataFrame:
        path = site_dir / MANIFEST
        frame = read_manifest(
            path,
            what="manifest",
            site="hospital",
            required={"label": "Add a 'label' column with 1 where the finding is present and 0 where it is absent."},
            read_fix="Save it as comma-separated UTF-8 text the training user can read.",
            missing_fix=f"Write {MANIFEST} with columns file (path relative to the folder) or sop_instance_uid, "
            "label (0/1) and consent (yes/no).",
            empty_fix="Write a header (file,label,consent) and one row per image.",
        )
        if frame is None:  # unreachable: with missing_fix given, read_manifest raises for an absent manifest
            raise FlsuiteError(f"{path}: no manifest came back for a required one (a bug in flsuite; please report it)")
        if "file" not in frame.columns and "sop_instance_uid" not in frame.columns:
            raise DataValidationError(
                path,
                "rows must name their image by 'file' (relative path) or 'sop_instance_uid'; neither column exists.",
                "Add a 'file' column with each image's path relative to the hospital folder.",
                field="file",
            )
        if self.require_consent and "consent" not in frame.columns:
            raise DataValidationError(
                path,
                "the policy requires consent per record but the manifest has no 'consent' column.",
                "Add a 'consent' column (yes/no) from your consent register; records without consent are never loaded.",
                field="consent",
            )
        if len(frame) == 0:
            raise DataValidationError(
                path, "the manifest has a header but no rows.", "Add one row per image, or remove this hospital."
            )
        return frame

    @staticmethod
    def _check_labels(frame: pd.DataFrame, path: Path) -> None:
        labels = frame["label"].str.strip()
        bad = ~labels.isin(["0", "1"])
        if bad.any():
            row = int(frame.index[np.flatnonzero(bad.to_numpy())[0]])
            found = "an empty value" if not labels.loc[row] else "a value other than 0 or 1"
            raise DataValidationError(  # the cell is not echoed: a pasted identifier would spread through logs
                path,
                f"labels must be 0 or 1 but row {row + 1} holds {found} ({int(bad.sum())} bad label(s)).",
                "Map 'finding present' to 1 and 'absent' to 0.",
                field="label",
            )

    # -- scanning ------------------------------------------------------------------------

    def _scan(self, site_dir: Path) -> _Scan:
        """Resolve manifest rows to files, read their headers, collect problems and identifiers."""
        frame = self._manifest(site_dir)
        rules = rules_for(site_dir)
        scan = _Scan()
        manifest = site_dir / MANIFEST
        scan.consent_recorded = "consent" in frame.columns
        if scan.consent_recorded:
            consented = parse_consent(frame["consent"], manifest)
            scan.no_consent = int((~consented).sum())
            frame = frame[consented]
        self._check_labels(frame, manifest)  # rows without consent are not looked at
        files = frame["file"].str.strip() if "file" in frame.columns else pd.Series([""] * len(frame), frame.index)
        uids = (
            frame["sop_instance_uid"].str.strip()
            if "sop_instance_uid" in frame.columns
            else pd.Series([""] * len(frame), frame.index)
        )
        by_uid: dict[str, str] = {}
        if (uids[files == ""] != "").any():
            by_uid = uid_index(site_dir)
        root = site_dir.resolve()
        seen: set[str] = set()
        for row, file, uid, label in zip(frame.index, files, uids, frame["label"].str.strip(), strict=True):
            where = f"{manifest} row {int(row) + 1}"
            if file:
                try:
                    target = (site_dir / file).resolve()
                    usable = root in target.parents and target.is_file()
                except (OSError, ValueError):  # e.g. a NUL byte or an over-long name
                    usable = False
                if not usable:
                    scan.problems.append(
                        Problem(
                            where,
                            "missing_file",
                            f"it names file {file!r}, which does not exist inside the hospital folder.",
                            "Fix the path (relative to the hospital folder) or remove the row.",
                            field="file",
                        )
                    )
                    continue
                rel = target.relative_to(root).as_posix()
            elif uid:
                if uid not in by_uid:
                    scan.problems.append(
                        Problem(
                            where,
                            "missing_file",
                            f"no DICOM file in the folder has SOPInstanceUID {uid}.",
                            "Add the image or remove the row.",
                            field="sop_instance_uid",
                        )
                    )
                    continue
                rel = by_uid[uid]
            else:
                scan.problems.append(
                    Problem(where, "missing_file", "it names no file and no SOPInstanceUID.", "Fill one of them.")
                )
                continue
            if rel in seen:
                scan.problems.append(
                    Problem(
                        where,
                        "duplicate",
                        f"file {rel!r} is listed more than once.",
                        "List each image once with a single label.",
                    )
                )
                continue
            seen.add(rel)
            path = site_dir / rel
            try:
                ds = dcmread(path, defer_size="4 KB")
            except Exception as err:  # pydicom's parser raises many types on damaged files; recorded as a Problem
                scan.problems.append(unreadable(path, err))
                continue
            scan.findings.extend(identifier_findings(ds, path, rules))
            problem = image_problem(ds, path, self.max_image_bytes)
            if problem is not None:
                scan.problems.append(problem)
                continue
            scan.records.append((rel, int(label)))
        return scan

    def scan_identifiers(self, site_dir: Path, policy: GovernancePolicy | None = None) -> list[Finding]:
        """Identifiers in every DICOM file of the folder, listed or not in the manifest.

        A file that cannot be read is a finding too: nobody checked what it holds.
        ``policy`` is the site's (default: ``policy.toml`` in the folder).
        """
        rules = rules_for(site_dir, policy)
        findings = []
        with quiet_values():
            for path in candidate_files(Path(site_dir)):
                try:
                    ds = dcmread(path, stop_before_pixels=True)
                except Exception as err:  # any parser failure: reported as a finding naming the file and the error
                    findings.append(unreadable_finding(path, err))
                    continue
                findings.extend(identifier_findings(ds, path, rules))
        return findings

    # -- reading ------------------------------------------------------------------------

    def _cache_key(self, site_dir: Path, strict: bool) -> str:
        settings = {"size": self.image_size, "frames": self.frames, "strict": strict, "consent": self.require_consent}
        return cache_key(site_dir, settings)

    def read(self, site_dir: Path, *, strict: bool = True) -> SiteData:
        """Load a hospital's labelled images (decoded once, then from the cache).

        Raises
        ------
        DataValidationError
            In strict mode for the first unusable file or row (with a count of the
            others); in both modes for a bad manifest or a missing decoder.
        """
        site_dir = Path(site_dir)
        if not site_dir.is_dir():
            raise DataValidationError(site_dir, "the hospital folder does not exist.", "Pass an existing folder.")
        key = self._cache_key(site_dir, strict) if self.use_cache else ""
        cached = cache_root() / f"{key}.npz"
        if self.use_cache and cached.is_file():
            try:
                return load_site(site_dir, cached)
            except (OSError, ValueError, KeyError):
                pass  # a damaged cache entry is rebuilt
        with quiet_values():
            site = self._decode(site_dir, strict)
        if self.use_cache:
            try:
                save_site(site, cached)
            except OSError:
                pass  # an unwritable cache costs a decode next time, nothing else
        return site

    def _decode(self, site_dir: Path, strict: bool) -> SiteData:
        scan = self._scan(site_dir)
        if strict and scan.problems:
            raise scan.problems[0].error(len(scan.problems) - 1, "medical")
        images, labels, kept = [], [], []
        for rel, label in scan.records:
            path = site_dir / rel
            try:
                ds = dcmread(path)
            except Exception as err:  # the header was readable, the rest is not; recorded as a Problem
                problem = unreadable(path, err)
            else:
                missing_decoder = decoder_error(ds, path)
                if missing_decoder is not None:
                    raise missing_decoder  # an install fixes this, not skipping: refuse in both modes
                try:
                    images.append(to_image(ds, self.image_size, self.frames))
                    labels.append(label)
                    kept.append(rel)
                    continue
                except ConstantImageError:
                    problem = Problem(
                        str(path),
                        "constant",
                        "every pixel holds the same value: a blank or failed export, with nothing to learn from.",
                        "Re-export the image, or remove it from labels.csv.",
                        field="PixelData",
                    )
                except Exception as err:  # decoders raise many types on damaged data; recorded as a Problem
                    problem = Problem(
                        str(path),
                        "undecodable",
                        f"its pixel data could not be decoded ({describe_error(err)}).",
                        "Check the file with a DICOM viewer; it may be truncated. Re-export it or remove it.",
                        field="PixelData",
                    )
            if strict:
                raise problem.error(0, "medical")
            scan.problems.append(problem)
        if not images:
            raise DataValidationError(
                site_dir,
                f"no usable image remains ({len(scan.problems)} problem(s), {scan.no_consent} without consent).",
                "Check the folder with `flsuite site check --domain medical --data DIR`.",
            )
        counts = Counter(p.kind for p in scan.problems)
        counts["no_consent"] = scan.no_consent
        x = np.stack(images)[:, None, :, :]
        return SiteData(
            site_dir.name,
            x.astype(np.float32),
            np.asarray(labels, dtype=np.int64),
            str(site_dir),
            {
                "files": kept,
                "skipped": dict(counts),
                "consent_recorded": scan.consent_recorded,
                "skipped_examples": [str(p) for p in scan.problems],
                "identifier_findings": scan.findings,
            },
        )
