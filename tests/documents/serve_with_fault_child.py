"""`python -m tests.documents.serve_with_fault_child [quarry serve options]`: the real
`quarry serve`, with the parser's child process replaced by the test stand-in that
misbehaves on cue (`tests/documents/fault_child.py`). For tests only."""

from __future__ import annotations

import sys

from quarry.cli import app
from quarry.documents.parsing import isolation

if __name__ == "__main__":
    isolation.CHILD_MODULE = "tests.documents.fault_child"
    app(["serve", *sys.argv[1:]])
