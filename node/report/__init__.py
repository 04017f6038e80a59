"""The case report: every measurement of a case as a DICOM SR (TID 1500) plus a readable summary capture."""
