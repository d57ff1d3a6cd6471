"""The checkpoint benchmark's pieces that need no workers: the peak-memory sampler sees an
allocation it did not make itself, the raw write writes exactly the bytes asked, and the
report renders the goals and every column."""

from __future__ import annotations

import torch

from realloc.bench.checkpoint import PeakRSS, _raw_read, _raw_write, render


def test_peak_rss_sees_a_temporary_allocation():
    with PeakRSS() as mem:
        block = torch.ones(64 << 20, dtype=torch.uint8)  # 64 MiB, touched
        del block
    assert mem.extra >= 60 << 20


def test_raw_write_and_read_move_the_asked_bytes(tmp_path):
    path = tmp_path / "raw.bin"
    assert _raw_write(path, (16 << 20) + 5) > 0
    assert path.stat().st_size == (16 << 20) + 5
    assert _raw_read(path) > 0


def test_render_has_every_column_and_the_goals():
    row = {"model": "llama h8", "params_m": 1.0, "state_mib": 12.0, "save_gbps": 0.5, "raw_write_gbps": 1.0,
           "save_over_raw": 0.5, "load_gbps": 2.0, "raw_read_gbps": 2.0, "load_over_raw": 1.0,
           "save_extra_mib": 3.0, "load_extra_mib": 1.0, "largest_chunk_mib": 4.0, "rank_state_mib": 6.0}
    lines = render({"workers": 2, "repeats": 3, "load_avg": 1.5, "rows": [row], "goals": "G"})
    assert "load average 1.5" in lines[0] and "Goals: G." in lines[0]
    assert lines[2].count("|") == 14 and "| llama h8 | 1.0 | 12.0 | 0.50 | 1.00 | 0.50x | 2.00 | 2.00 | 1.00x |" in lines[4]
