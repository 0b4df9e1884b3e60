"""What comes in through the supervisor's sockets and who answers it: the dispatch loops, and the
admin calls (status, load, unload, the catalog's calls, diagnostics)."""
