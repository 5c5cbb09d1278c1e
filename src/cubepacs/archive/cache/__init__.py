"""Caches for hot metadata and QIDO results (``memory://`` in-process, ``redis://`` shared)."""
