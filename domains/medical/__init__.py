"""Medical vertical: DICOM imaging and clinical tables across hospitals (scenarios arrive with issue 3)."""

DOMAIN = "medical"
