"""The archive: a PACS (DIMSE SCP, DICOMweb, indexer, web worker) on storage, queue and index backends."""
