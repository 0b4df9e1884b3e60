"""The router's side of the fleet: the ZeroMQ client and calls through it, a request's way through
it (`Exchange`), the stream loop every API shares, the gathered reply, and the catalog snapshot."""
