"""The real peers the tests and benchmarks run against: Orthanc (PACS/TPS), dcmtk storescp, a test PKI,
dciodvfy. Not used by the node; importable from the repository root (pytest's pythonpath, `python -m bench.NAME`).
"""
