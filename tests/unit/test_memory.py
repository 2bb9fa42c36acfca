"""memory.py, the one memory meter: this process's peak RSS (reset where /proc allows it), without psutil."""

import sys

import pytest

from deploy_kit import memory


def test_the_peak_of_this_process_covers_what_came_after_its_reset():
    base = memory.reset_peak_rss()
    block = b"\x01" * (200 << 20)  # written, so every page of it is resident
    peak = memory.peak_rss_mib()
    del block
    assert base > 0 and peak >= base + 190, (base, peak)
    again = memory.reset_peak_rss()
    if memory._status_kib("VmHWM") is None:
        pytest.skip("no /proc here: ru_maxrss cannot be reset")
    assert memory.peak_rss_mib() < peak - 150 and again < peak - 150  # the freed block is gone from the peak


def test_the_process_meter_needs_no_psutil(monkeypatch):
    """The core install (where ``bench`` of a bundle runs) has no psutil: the process meter still reads,
    and the tree meter (PeakRss) reports None instead of failing."""
    monkeypatch.setitem(sys.modules, "psutil", None)  # import psutil now raises ImportError
    assert memory.peak_rss_mib() >= memory.reset_peak_rss() > 0
    with memory.PeakRss() as tree:
        assert not tree.available and tree.take() is None and tree.peak_mib() is None
