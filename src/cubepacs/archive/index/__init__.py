"""The index: patient/study/series/instance rows and the web worker table (SQLite, PostgreSQL)."""
