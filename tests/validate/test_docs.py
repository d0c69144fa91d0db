"""docs/validation.md stays in step with the code: every rule id is in its catalogue."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


class TestValidationDocs:
    def test_every_rule_id_is_documented(self) -> None:
        docs = (ROOT / "docs" / "validation.md").read_text()
        source = "\n".join(
            p.read_text() for p in (ROOT / "src" / "archivist" / "validate").glob("*.py")
        )
        rules = set(re.findall(r'"((?:part10|encoding|dict|iod|consistency)\.[a-z0-9-]+)"', source))
        rules |= {f"iod.type{k}-missing" for k in ("1", "2", "1c", "2c")}
        rules |= {"iod.type1-empty", "iod.type1c-empty"}
        rules |= {f"consistency.{e}-attributes" for e in ("patient", "study", "series")}
        assert len(rules) > 35
        missing = sorted(r for r in rules if f"`{r}`" not in docs)
        assert missing == []

    def test_tables_readme_names_source(self) -> None:
        readme = (ROOT / "src" / "archivist" / "validate" / "_standard" / "README.md").read_text()
        assert "highdicom" in readme and "Edition" in readme
