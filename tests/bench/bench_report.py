"""What the benchmarks compute and report: statistics, memory samples, tables, charts, and the saved
results with the machine they ran on.

Numbers are medians over rounds; "p95" is linear-interpolated over all samples of a side. The
two sides of a comparison run in the same session, alternating which goes first each round, so
a machine that gets slower or faster during the run affects both alike.

Not a test module. It needs only the standard library and psutil; matplotlib is used for the
charts when it can be imported.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import psutil

from bench_streams import Stream
from benchlib import ROOT, results_dir


# -- statistics and memory ----------------------------------------------------------------------

def pct(values: Iterable[float | None], q: float) -> float | None:
    data = sorted(v for v in values if v is not None)
    if not data:
        return None
    pos = (len(data) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


def med(values: Iterable[float | None]) -> float | None:
    return pct(values, 50)


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def paired_ratio(a: Sequence[float | None], b: Sequence[float | None]) -> float | None:
    """The median over rounds of a[i] / b[i]. This machine's speed drifts by up to ~1.7x over
    seconds (other tenants), so two sides compare best within a round, where they ran back to
    back, and the median then drops the rounds a drift split."""
    return med(ratio(x, y) for x, y in zip(a, b))


def available() -> int:
    return psutil.virtual_memory().available


def sample_available(seconds: float, every: float = 0.05) -> int:
    """The median of the machine's available memory over `seconds` (it wanders on its own)."""
    values = []
    deadline = time.monotonic() + seconds
    while True:
        values.append(available())
        if time.monotonic() >= deadline:
            break
        time.sleep(every)
    return int(med(values))


# -- reports ------------------------------------------------------------------------------------

def fmt(value: Any) -> str:
    """Numbers with as many decimals as their size deserves: 1,234.5 / 12.3 / 1.23 / 0.123."""
    if value is None:
        return "-"
    if isinstance(value, float):
        size = abs(value)
        digits = 1 if size >= 10 else 2 if size >= 1 else 3
        return f"{value:,.{digits}f}"
    return str(value)


def table(title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(h) for h in headers], *[[c if isinstance(c, str) else fmt(c) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = [title, "  ".join(h.ljust(w) for h, w in zip(cells[0], widths)), "  ".join("-" * w for w in widths)]
    for row in cells[1:]:
        lines.append("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))))
    text = "\n".join(lines)
    print("\n" + text)
    return text


def _git() -> dict:
    def run(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    return {"commit": run("rev-parse", "--short", "HEAD") or None, "dirty": bool(run("status", "--porcelain"))}


def machine(extra: dict | None = None) -> dict:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    gpu = None
    if shutil.which("nvidia-smi"):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            gpu = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=10).stdout.strip() or None
    return {"host": platform.node(), "system": f"{platform.system()} {platform.release()}", "cpu": cpu,
            "cores": os.cpu_count(), "memory_total": psutil.virtual_memory().total, "gpu": gpu,
            "python": platform.python_version(), "git": _git(),
            "loadavg": [round(x, 2) for x in os.getloadavg()], **(extra or {})}


def describe_machine(info: dict) -> str:
    mem = info["memory_total"] / 2**30
    dev = info.get("device", "?")
    gpu = f", GPU {info['gpu']}" if info.get("gpu") else ""
    return (f"{info['cpu']} ({info['cores']} cores, {mem:.0f} GiB{gpu}); MLX {info.get('mlx')} on {dev}, "
            f"mlx-lm {info.get('mlx_lm')}, BLAS {info.get('blas') or 'built-in'}; Python {info['python']}")


def save(name: str, payload: dict, chart: Callable[[Any], Any] | None = None, *, info: dict | None = None) -> Path:
    """Write bench-results/<name>.json and, when matplotlib is there, <name>.png."""
    out = results_dir()
    doc = {"bench": name, "when": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
           "machine": machine(info), **payload}
    path = out / f"{name}.json"
    path.write_text(json.dumps(doc, indent=2, default=_jsonable))
    print(f"[bench] machine: {describe_machine(doc['machine'])}")
    print(f"[bench] wrote {path}")
    if chart is not None:
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            print("[bench] matplotlib is not installed: no chart")
            return path
        fig = chart(plt)
        png = out / f"{name}.png"
        fig.savefig(png, dpi=110, bbox_inches="tight")
        plt.close(fig)
        print(f"[bench] wrote {png}")
    return path


def _jsonable(value: Any) -> Any:
    if hasattr(value, "__dataclass_fields__"):
        return asdict(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON: {type(value).__name__}")


def stream_row(s: Stream) -> dict:
    d = asdict(s)
    d.pop("text")
    d["decode_tps"] = s.decode_tps
    return d


def bars(plt, title: str, groups: Sequence[str], series: dict[str, Sequence[float | None]], ylabel: str,
         ax=None):
    """Grouped bars: one group per label in `groups`, one bar per series."""
    own = ax is None
    if own:
        fig, ax = plt.subplots(figsize=(max(5, 1.3 * len(groups) * len(series)), 3.6))
    width = 0.8 / max(1, len(series))
    for i, (label, values) in enumerate(series.items()):
        xs = [g + (i - (len(series) - 1) / 2) * width for g in range(len(groups))]
        ax.bar(xs, [v or 0 for v in values], width, label=label)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(groups)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend()
    return ax.figure if own else ax
