"""``python -m nanostream_trio``: the ``nanostream`` command."""

from __future__ import annotations

from ._cli import main

raise SystemExit(main())
