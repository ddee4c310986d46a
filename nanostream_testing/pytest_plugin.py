"""pytest plugin for nanostream-trio (registered through the ``pytest11`` entry point)."""
