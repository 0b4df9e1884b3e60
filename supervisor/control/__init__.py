"""What comes in through the supervisor's sockets and who answers it: the dispatch loops, the
admin calls (status, load, unload, the catalog's calls, diagnostics), and the housekeeping tick
(measuring, idle TTL, trimming, the watchdog)."""
