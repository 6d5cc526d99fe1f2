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

Images to score (:meth:`DicomAdapter.read_unlabelled`: a folder, or one file) are checked
and decoded the same way. ``labels.csv`` is optional there: without it every DICOM
candidate is scored; with it, its rows (consent honoured) are, labelled where they
give a label. A header holding a direct identifier is refused (strict) or its file skipped.

Decoded arrays are cached (:mod:`domains.medical.adapters.dicom_cache`), keyed by every
input file's size and modification time and by the decoding settings, so a second run
does not decode again.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom import dcmread

from domains.medical.adapters.deid import DeidRules, identifier_findings, unreadable_finding
from domains.medical.adapters.dicom_cache import cache_key, cache_root, load_site, save_site
from domains.medical.adapters.dicom_files import candidate_files, quiet_values, unreadable
from domains.medical.adapters.dicom_manifest import MANIFEST, Listing, read_listing
from domains.medical.adapters.pixels import MAX_IMAGE_BYTES, ConstantImageError, decoder_error, image_problem, to_image
from domains.medical.governance import DEFAULT_POLICY
from flcore.data.files import describe_error
from flcore.data.site import UNLABELLED, Problem, SiteData
from flcore.exceptions import DataValidationError
from flcore.governance.policy import GovernancePolicy, site_policy
from flcore.governance.rules import Finding, open_findings


def rules_for(site_dir: Path, policy: GovernancePolicy | None = None) -> DeidRules:
    """The de-identification a site declares: ``policy``, else its folder's ``policy.toml``."""
    return DeidRules.of(policy if policy is not None else site_policy(Path(site_dir), GovernancePolicy()))


# --------------------------------------------------------------------------------------
# The adapter
# --------------------------------------------------------------------------------------


@dataclass
class _Scan:
    """What a pass over the manifest and the headers found."""

    records: list[tuple[str, int]] = field(default_factory=list)  # (relative path, label 0, 1 or UNLABELLED)
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

    # -- scanning ------------------------------------------------------------------------

    def _scan(self, site_dir: Path, *, labelled: bool = True, only: str | None = None) -> _Scan:
        """Find the images, read their headers, collect problems and identifiers.

        The images are the manifest's rows; when scoring (not ``labelled``) without a
        manifest, every DICOM candidate in the folder, or the one file ``only`` names.
        When scoring, a header with an identifier the site's policy does not excuse is a problem.
        """
        if only is not None:
            listing = Listing([(only, UNLABELLED)])
        elif labelled or os.path.lexists(site_dir / MANIFEST):
            listing = read_listing(site_dir, labelled=labelled, require_consent=self.require_consent)
        else:
            listing = Listing([(p.relative_to(site_dir).as_posix(), UNLABELLED) for p in candidate_files(site_dir)])
        scan = _Scan(no_consent=listing.no_consent, consent_recorded=listing.consent_recorded)
        rules = rules_for(site_dir)
        policy = None if labelled else site_policy(site_dir, DEFAULT_POLICY)
        for row in listing.rows:
            if isinstance(row, Problem):
                scan.problems.append(row)
                continue
            rel, label = row
            path = site_dir / rel
            try:
                ds = dcmread(path, defer_size="4 KB")
            except Exception as err:  # pydicom's parser raises many types on damaged files; recorded as a Problem
                scan.problems.append(unreadable(path, err))
                continue
            found = identifier_findings(ds, path, rules)
            scan.findings.extend(found)
            problem = _identified(path, found, policy) or image_problem(ds, path, self.max_image_bytes)
            if problem is not None:
                scan.problems.append(problem)
                continue
            scan.records.append((rel, label))
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

    def _cache_key(self, site_dir: Path, strict: bool, labelled: bool = True) -> str:
        settings: dict[str, object] = {
            "size": self.image_size,
            "frames": self.frames,
            "strict": strict,
            "consent": self.require_consent,
        }
        if not labelled:  # images to score: other files, labels and checks (training keys stay as they were)
            settings["unlabelled"] = True
        return cache_key(site_dir, settings)

    def read(self, site_dir: Path, *, strict: bool = True) -> SiteData:
        """Load a hospital's labelled images (decoded once, then from the cache).

        Returns
        -------
        SiteData
            ``x`` (n, 1, size, size) float32; ``ids`` each image's path relative to the folder.

        Raises
        ------
        DataValidationError
            In strict mode for the first unusable file or row (with a count of the
            others); in both modes for a bad manifest or a missing decoder.
        """
        site_dir = Path(site_dir)
        if not site_dir.is_dir():
            raise DataValidationError(site_dir, "the hospital folder does not exist.", "Pass an existing folder.")
        return self._cached(site_dir, strict, labelled=True)

    def read_unlabelled(self, path: Path, *, strict: bool = True) -> SiteData:
        """Load images to score: a hospital folder or one DICOM file, decoded exactly as for training.

        Parameters
        ----------
        path : Path
            A folder: its ``labels.csv`` rows if it has one (rows without consent are
            dropped; a ``label`` column is used where filled, not required), else every DICOM
            candidate in it (the module docstring says which files are). Or one DICOM file.
            Either is read under the ``policy.toml`` of its folder, if any.
        strict : bool
            Refuse at the first unusable file or row (True), or skip it and count it in
            ``info["skipped"]`` by kind.

        Returns
        -------
        SiteData
            ``x`` as :meth:`read` gives it, ``y`` 0, 1 or ``UNLABELLED`` (-1), ``ids`` each
            image's path relative to the folder (the file name for a single file).

        Raises
        ------
        DataValidationError
            As for :meth:`read`; in strict mode also for a header holding a direct identifier
            that the site's policy does not excuse (unless the policy drops ``require_deidentified``).
        """
        path = Path(path)
        if path.is_dir():
            return self._cached(path, strict, labelled=False)
        if not path.is_file():
            raise DataValidationError(
                path, "the path is neither a hospital folder nor a file.", "Pass a DICOM file or a folder."
            )
        with quiet_values():  # one file: not cached (the cache keys whole folders)
            return self._decode(path.parent, strict, labelled=False, only=path.name)

    def _cached(self, site_dir: Path, strict: bool, *, labelled: bool) -> SiteData:
        """A folder's images from the cache, else decoded and cached."""
        key = self._cache_key(site_dir, strict, labelled) if self.use_cache else ""
        cached = cache_root() / f"{key}.npz"
        if self.use_cache and cached.is_file():
            try:
                return load_site(site_dir, cached)
            except (OSError, ValueError, KeyError):
                pass  # a damaged cache entry is rebuilt
        with quiet_values():
            site = self._decode(site_dir, strict, labelled=labelled)
        if self.use_cache:
            try:
                save_site(site, cached)
            except OSError:
                pass  # an unwritable cache costs a decode next time, nothing else
        return site

    def _decode(self, site_dir: Path, strict: bool, *, labelled: bool = True, only: str | None = None) -> SiteData:
        scan = self._scan(site_dir, labelled=labelled, only=only)
        source = site_dir / only if only is not None else site_dir
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
                source,
                f"no usable image remains ({len(scan.problems)} problem(s), {scan.no_consent} without consent).",
                "Check the folder with `flsuite site check --domain medical --data DIR`.",
            )
        counts = Counter(p.kind for p in scan.problems)
        counts["no_consent"] = scan.no_consent
        x = np.stack(images)[:, None, :, :]
        return SiteData(
            source.stem if only is not None else site_dir.name,
            x.astype(np.float32),
            np.asarray(labels, dtype=np.int64),
            str(source),
            {
                "files": kept,
                "skipped": dict(counts),
                "consent_recorded": scan.consent_recorded,
                "skipped_examples": [str(p) for p in scan.problems],
                "identifier_findings": scan.findings,
            },
            ids=np.asarray(kept, dtype=object),
        )


def _identified(path: Path, found: list[Finding], policy: GovernancePolicy | None) -> Problem | None:
    """The problem of an image to score whose header holds identifiers ``policy`` requires gone (None: training)."""
    found = open_findings(found, policy) if policy is not None and policy.require_deidentified else []
    if not found:
        return None
    return Problem(
        str(path),
        "identifiers",
        f"its header holds {len(found)} direct identifier(s); the first: {found[0].tag} {found[0].reason}.",
        "De-identify the file (DICOM PS3.15 basic confidentiality profile) before scoring it, as for training.",
        field=found[0].tag,
    )
