"""The benchmark harness behind ``make bench``: Archivist against Orthanc, DCMTK storescp and a bare
pynetdicom SCP, side by side in one run (see docs/performance.md)."""
