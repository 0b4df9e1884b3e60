"""The router's side of the fleet: the ZeroMQ client, a request's way through it (`Exchange`),
the stream loop every API shares, the gathered reply, the catalog snapshot, and conversations
with their images as the worker's chat messages."""
