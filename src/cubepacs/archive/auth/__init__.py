"""Who may do what: API keys (hashed), browser users and their revocable sessions, roles."""
