"""The router: the HTTP API in front of the fleet (Litestar; never imports MLX).

One package per API (`openai`, `responses`, `anthropic`) and per audience (`admin`, `dashboard`),
each exporting its `ROUTES`, which `app.py` assembles; below them `http` (errors, bodies in and
out, OpenAPI, admission, usage), `auth` (keys, the guard, sessions), `inputs` (conversation,
images, sampling: the API-neutral parts of a request) and `fleet` (the ZeroMQ client, a request's
`Exchange`, the stream loop every API shares, the gathered reply, the catalog view). Handlers read
the app's state as their `router: FromApp[RouterState]` parameter (`router_state.py`).

An API is three steps around the shared loop: its request bodies (`types.py`), an adapter
`async (req, model, router) -> Generate` (`input.py`), and its framing of the stream and of a
whole reply (a `fleet.event_stream.Framer`, and a function of a `GatheredReply`); its routes
resolve the model, adapt, and `respond`.
"""
