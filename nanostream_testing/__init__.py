"""nanostream_testing: deterministic tests for nanostream-trio pipelines and nodes.

A separate import, like ``trio.testing``: ``nanostream_trio`` never imports it.
"""

from __future__ import annotations

__all__: list[str] = []
