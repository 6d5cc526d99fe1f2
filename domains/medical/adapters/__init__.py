"""Medical adapters, one module per adapter: ``dicom`` and ``clinical``; the other modules serve ``dicom`` only."""
