"""Site data layer: manifests, NIfTI/DICOM ingestion, preprocessing cache, data passport, example data."""
