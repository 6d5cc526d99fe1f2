"""Medical domain: DICOM imaging and clinical tables across hospitals (medical-three-hospitals, medical-clinical)."""
