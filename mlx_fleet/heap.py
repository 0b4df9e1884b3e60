"""Keep the garbage collector's full passes off the token path.

Every process of the fleet imports large libraries (Litestar and uvicorn in the router; mlx-lm
and transformers in a worker) and then lives for hours. A full collection walks every tracked
object, so in these processes each one took 10-45 ms (measured with `gc.callbacks`) and landed
on whichever request was running: a stalled stream, a late first token. Everything that exists
once a process is serving lives as long as the process, so it is moved out of the collector's
reach; what remains for it to walk is what requests allocate.
"""

from __future__ import annotations

import gc


def freeze_startup_heap() -> None:
    """Call once a process has imported and built everything it serves with."""
    gc.freeze()
