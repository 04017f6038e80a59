"""The phantom family: liver CT perfusion cases drawn over the clinical range, with truth computed from their
noiseless curves by code that shares nothing with the node (README.md in this folder).

    spec = draw_case(seed, noise_hu=20)          # or pin any condition by keyword
    cts, rtss, truth = build(spec)               # pydicom datasets in memory + the truth dict
    write(spec, outdir)                          # the same as files
"""
from node.phantom.family.case import CaseSpec, draw_case
from node.phantom.family.dicom import build, write
from node.phantom.family.render import truth

__all__ = ["CaseSpec", "build", "draw_case", "truth", "write"]
