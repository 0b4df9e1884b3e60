"""Who may call what: keys, the guard on every route, the Host check, and dashboard sessions."""
