"""DIMSE services (pynetdicom): C-ECHO, C-STORE, C-FIND."""
