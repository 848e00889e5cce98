"""Shared test setup: pytest puts this folder on ``sys.path`` (it has no ``__init__.py``), so tests in
any subfolder can import the helpers kept here, e.g. ``from sync_counter import SyncCounter``."""
