"""The test suite's fake OpenAI on 127.0.0.1:3001, to try navai without an OpenAI key.

From the repository root, after ``python3 -m venv .venv && .venv/bin/pip install -e '.[dev]'``::

    .venv/bin/python examples/fake_openai.py --demo

It prints the line that runs ``navai serve`` against it; open http://127.0.0.1:3000/ and start a
call. ``--help`` lists the options. The fake itself is ``tests/fakes`` (``fakes/__main__.py``).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from fakes.__main__ import main  # tests/ is on the path only now

if __name__ == "__main__":
    raise SystemExit(main())
