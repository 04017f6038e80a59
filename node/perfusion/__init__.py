"""Liver CT perfusion: 4D assembly, pre-processing, input curves, dual-input maps and their DICOM outputs.

Entry point: :func:`node.perfusion.pipeline.run_perfusion`. Methods follow ../shared/science.md section 1.
"""
