"""The real peers the tests and benchmarks run against: Orthanc (PACS/TPS), dcmtk storescp, a test PKI,
dciodvfy, and dcmri's two-inlet liver model fitted by scipy (reference_models: an independent implementation of
the perfusion model). Not used by the node; importable from the repository root (pytest's pythonpath,
`python -m bench.NAME`).
"""
