"""Works around openapi-python-client issue #1451 (open in 0.29.1): an operation whose required body has several
content types (our upload: multipart/form-data or text/csv) is annotated `... | Unset = UNSET`, but `Unset` is
not imported, so the module fails to import (today the upload's `encoding` parameter happens to bring the import
in). Adds the import where a module uses `Unset` or `UNSET` without it; drop this once a fixed generator is
pinned.

Usage: python fix_generated.py PACKAGE_DIR
"""

import re
import sys
from pathlib import Path

IMPORT = re.compile(r"^from (\.+)types import (.+)$", re.MULTILINE)


def fix(module: Path) -> bool:
    text = module.read_text()
    imports = IMPORT.search(text)
    if imports is None:
        return False
    imported = {n.strip() for n in imports.group(2).split(",")}
    body = text.replace(imports.group(0), "")
    missing = {n for n in ("Unset", "UNSET") if re.search(rf"\b{n}\b", body)} - imported
    if not missing:
        return False
    names = ", ".join(sorted(imported | missing))
    module.write_text(text.replace(imports.group(0), f"from {imports.group(1)}types import {names}", 1))
    return True


def main(package: Path) -> None:
    fixed = [m for m in sorted(package.rglob("*.py")) if fix(m)]
    for m in fixed:
        print(f"fix_generated: imported Unset in {m.relative_to(package)} (openapi-python-client #1451)")
    if not fixed:
        print("fix_generated: every module imports the names it uses")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
