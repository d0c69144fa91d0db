"""Shared pytest configuration.

Tests are imported with ``--import-mode=importlib`` (test files in different folders may share a
basename); helper modules that live beside the tests (``dicomgen``, ``validation_cases``, ...) are
made importable by putting each test folder on ``sys.path``.
"""

import sys
from pathlib import Path

for _folder in sorted(p for p in Path(__file__).parent.iterdir() if p.is_dir()):
    if _folder.name.startswith((".", "__")):
        continue
    if str(_folder) not in sys.path:
        sys.path.insert(0, str(_folder))
