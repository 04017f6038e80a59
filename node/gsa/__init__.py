"""99mTc-GSA SPECT-guided radiotherapy targets (science.md section 2).

`node.gsa.pipeline.run_gsa` is the entry point: it registers the SPECT/CT to the planning CT
(`registration`), finds the liver (`liver`), defines FLS/ITV/PTV (`targets`) and builds the RTSTRUCT and
the fusion Secondary Captures (`outputs`); `grids` holds the resampling helpers they share.
"""
