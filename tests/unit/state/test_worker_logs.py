"""Per-model worker log files: bounded by rotation, read back as a tail or from an offset."""

from __future__ import annotations

from mlx_fleet.state.worker_logs import WorkerLogs, log_path, read_after, tail


def test_rotation_keeps_the_files_bounded_and_the_tail_reaches_into_the_last_one(tmp_path) -> None:
    logs = WorkerLogs(tmp_path, max_bytes=4096, backups=2)
    for i in range(2000):
        logs.write("tiny", f"line {i:05d} " + "x" * 40)
    logs.close()
    files = sorted(tmp_path.glob("tiny.log*"))
    assert [f.name for f in files] == ["tiny.log", "tiny.log.1", "tiny.log.2"]
    assert all(f.stat().st_size <= 4096 for f in files)
    lines, size = tail(tmp_path, "tiny", 100)
    assert len(lines) == 100 and lines[-1].endswith("line 01999 " + "x" * 40)
    assert [int(line.split()[3]) for line in lines] == list(range(1900, 2000))
    assert size == (tmp_path / "tiny.log").stat().st_size


def test_read_after_continues_and_restarts_after_a_rotation(tmp_path) -> None:
    logs = WorkerLogs(tmp_path, max_bytes=10_000, backups=1)
    logs.write("m", "first")
    _, offset = tail(tmp_path, "m", 10)
    logs.write("m", "second")
    logs.write("m", "third")
    lines, offset = read_after(tmp_path, "m", offset, 100)
    assert [line.split(" ", 2)[2] for line in lines] == ["second", "third"]
    assert read_after(tmp_path, "m", offset, 100) == ([], offset)
    for i in range(400):  # rotates: the current file is now smaller than the offset
        logs.write("m", f"after {i}")
    lines, _ = read_after(tmp_path, "m", 10**9, 5)
    assert len(lines) == 5 and "after" in lines[0]


def test_ids_with_slashes_get_a_file_of_their_own(tmp_path) -> None:
    a, b = log_path(tmp_path, "org/model"), log_path(tmp_path, "org_model")
    assert a.parent == tmp_path and a != b and "/" not in a.name
    assert tail(tmp_path, "never-ran", 10) == ([], 0)
