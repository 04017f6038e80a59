"""Shared imaging code of the workflows (pure numpy / SimpleITK / pydicom; no workflow names anything here).

* ``volumes``      DICOM series -> SimpleITK volumes with their patient geometry (single-frame CT, NM SPECT),
                   masks between CT slices and images; slice stacks ordered by ``rtstruct.geometry``
* ``geometry``     the voxel-grid geometry (index <-> patient mm) of volumes built from frames
* ``grids``        sub-grids, distances, masks and images carried between SimpleITK grids
* ``registration`` rigid CT-CT registration (GSA: SPECT/CT -> planning CT; MAA: SPECT/CT -> perfusion CT)
* ``dicomtime``    DICOM DA/TM/DT parsing and an image's acquisition time
* ``capture``      figure -> RGB pixels, and the one Secondary Capture encoder
* ``layers``       a volume laid out [superior, posterior, left] for display panels (every workflow's pages)
* ``rois``         which ROI of a structure set is the liver ([analysis] liver_roi_names)
* ``errors``       VolumeError, RegistrationError

The phantom (``node/phantom``) deliberately shares none of this: its truth is computed independently.
"""
