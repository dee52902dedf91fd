"""Checks that the code a Markdown page quotes from the client walkthroughs is the walkthroughs' own code.

A quote is a marker line `<!-- quoted from PATH#NAME -->` followed by a fenced code block; PATH (relative to the
repository) holds the block between a line `# docs: NAME` (or `// docs: NAME`) and the next `docs: end` line.
Fails listing every quote that differs, or whose block is missing; with LEADSCORE_UPDATE_DOCS=1 rewrites them.

Usage: python clients/quoted.py docs/clients.md
"""

import os
import re
import sys
import textwrap
from pathlib import Path

MARKER = re.compile(r"<!-- quoted from (?P<path>[^#\s]+)#(?P<name>[\w-]+) -->\n```(?P<lang>\w*)\n(?P<code>.*?)```", re.DOTALL)
REPO = Path(__file__).resolve().parent.parent


def block(path: str, name: str) -> str:
    lines = (REPO / path).read_text().splitlines()
    start = next((i for i, l in enumerate(lines) if re.fullmatch(rf"\s*(#|//) docs: {name}", l)), None)
    if start is None:
        raise SystemExit(f"quoted.py: {path} has no `docs: {name}` block")
    end = next(i for i in range(start + 1, len(lines)) if re.fullmatch(r"\s*(#|//) docs: end", lines[i]))
    return textwrap.dedent("\n".join(lines[start + 1 : end])).strip("\n") + "\n"


def main(page: Path) -> None:
    text = page.read_text()
    stale = []

    def quote(m: re.Match) -> str:
        code = block(m["path"], m["name"])
        if code != m["code"]:
            stale.append(f"{m['path']}#{m['name']}")
        return f"<!-- quoted from {m['path']}#{m['name']} -->\n```{m['lang']}\n{code}```"

    updated = MARKER.sub(quote, text)
    if not MARKER.search(text):
        raise SystemExit(f"quoted.py: {page} quotes nothing")
    if stale and os.environ.get("LEADSCORE_UPDATE_DOCS"):
        page.write_text(updated)
        print(f"quoted.py: rewrote {len(stale)} quotes in {page}")
    elif stale:
        raise SystemExit(
            f"quoted.py: {page} differs from the walkthroughs at {', '.join(stale)}; "
            "run LEADSCORE_UPDATE_DOCS=1 python3 clients/quoted.py " + str(page)
        )


if __name__ == "__main__":
    main(Path(sys.argv[1]))
