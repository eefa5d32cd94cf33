"""The round progress bar of endofed-sim / endofed-server: Flower's round marks to rounds done, by hand."""

from __future__ import annotations

import sys

from endofed.cli.progress import RoundProgress, phases_left, round_bar
from endofed.launch.stream import round_marker, run_streamed


def test_round_marks_are_read_through_colour_codes():
    assert round_marker("\x1b[92mINFO \x1b[0m:      [ROUND 3/14]\n") == (3, 14)
    assert round_marker("INFO :      configure_train: Sampled 3 nodes (out of 3)") is None
    assert round_marker("[ROUND x/2]") is None


def test_rounds_done_and_phase_names_follow_the_marks():
    state = RoundProgress([("pretrain", 2), ("finetune", 1)])
    seen = [(state.mark(k, n), state.done) for k, n in ((1, 2), (2, 2), (1, 1))]
    assert seen == [("pretrain round 1/2", 0), ("pretrain round 2/2", 1), ("finetune round 1/1", 2)]
    assert state.total == 3


def test_phases_left_after_a_saved_state():
    assert phases_left(3, 2) == [("pretrain", 3), ("finetune", 2)]
    assert phases_left(3, 2, ("pretrain", 1)) == [("pretrain", 2), ("finetune", 2)]
    assert phases_left(3, 2, ("finetune", 1)) == [("pretrain", 0), ("finetune", 1)]


def test_the_stream_calls_back_at_every_round_mark_and_the_bar_is_off_when_quiet(tmp_path):
    script = "print('[ROUND 1/2]'); print('working'); print('\\x1b[92mINFO\\x1b[0m: [ROUND 2/2]')"
    marks: list[tuple[int, int]] = []
    result = run_streamed([sys.executable, "-c", script], {}, tmp_path / "log", None, lambda k, n: marks.append((k, n)))
    assert result.returncode == 0 and marks == [(1, 2), (2, 2)]
    assert "working" in (tmp_path / "log").read_text()
    with round_bar([("pretrain", 2)], quiet=True) as on_round:
        assert on_round is None
    with round_bar([("pretrain", 2), ("finetune", 0)]) as on_round:
        assert on_round is not None
        on_round(1, 2)
