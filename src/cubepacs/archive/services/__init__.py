"""The archive's processes: ``serve`` and its DIMSE workers, the indexer, the web worker and the series builder."""
