"""DICOMweb (QIDO-RS, WADO-RS, STOW-RS) on Starlette/FastAPI."""
