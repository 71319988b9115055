"""Progress output: a bar in a terminal, log lines in a batch job with -v, nothing otherwise."""

from __future__ import annotations

import logging

import pytest

from winnow.stages.common import progress


@pytest.fixture
def no_bars():
    progress.set_enabled(False)
    yield
    progress.set_enabled(False)


def test_log_lines_without_a_terminal_at_info(no_bars, monkeypatch, caplog):
    monkeypatch.setattr(progress, "LOG_EVERY_S", 0.0)
    with caplog.at_level(logging.INFO, logger=progress.log.name):
        assert list(progress.track(range(4), "warmup epoch 1/3", total=4)) == [0, 1, 2, 3]
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("warmup epoch 1/3: 1/4 (25%)") and "left" in lines[0]
    assert lines[3].startswith("warmup epoch 1/3: 4/4 (100%)")
    assert lines[-1].startswith("warmup epoch 1/3: 4 done in")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger=progress.log.name):
        list(progress.track(iter("ab"), "decode"))  # no total: counts only
    assert [r.getMessage().split(",")[0] for r in caplog.records][:2] == ["decode: 1 done", "decode: 2 done"]


def test_silent_below_info_and_throttled(no_bars, caplog):
    with caplog.at_level(logging.WARNING, logger=progress.log.name):
        assert list(progress.track(range(3), "embed", total=3)) == [0, 1, 2]
    assert caplog.records == []
    with caplog.at_level(logging.INFO, logger=progress.log.name):  # default 30 s: only the final line
        list(progress.track(range(1000), "embed", total=1000))
    assert [r.getMessage() for r in caplog.records][-1].startswith("embed: 1000 done in")
    assert len(caplog.records) == 1


def test_plain_lines_without_a_terminal_and_without_v(monkeypatch, capsys, caplog):
    """Issue 20: without a terminal and without -v a long stage printed nothing until it ended."""
    progress.set_enabled(False, plain_lines=True)
    try:
        with caplog.at_level(logging.WARNING, logger=progress.log.name):
            list(progress.track(range(50), "embed", total=50))  # short: nothing at all
            assert capsys.readouterr().err == ""
            monkeypatch.setattr(progress, "LOG_EVERY_S", 0.0)
            list(progress.track(range(2), "warmup epoch 1/3", total=2))
        err = capsys.readouterr().err.splitlines()
        assert err[0].startswith("winnow: warmup epoch 1/3: 1/2 (50%)") and "elapsed" in err[0]
        assert err[-1].startswith("winnow: warmup epoch 1/3: 2 done in")
    finally:
        progress.set_enabled(False)
