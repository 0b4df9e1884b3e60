"""Unit tests for `worker.generation.stops.StopMatcher`: stop strings across token boundaries."""

from __future__ import annotations

import pytest

from mlx_fleet.worker.generation.stops import StopMatcher


def run(stops: tuple[str, ...], pieces: list[str]) -> tuple[list[str], bool, str]:
    """Feed pieces until a stop; return what was emitted per piece, whether it stopped, and the flush."""
    matcher = StopMatcher(stops)
    emitted = []
    for piece in pieces:
        text, stopped = matcher.feed(piece)
        emitted.append(text)
        if stopped:
            return emitted, True, matcher.flush()
    return emitted, False, matcher.flush()


def test_stop_inside_one_piece():
    matcher = StopMatcher(("STOP",))
    assert matcher.feed("hello STOP world") == ("hello ", True)
    assert matcher.flush() == ""


def test_stop_at_start_of_piece():
    assert StopMatcher(("</s>",)).feed("</s>tail") == ("", True)


def test_stop_split_across_two_pieces():
    matcher = StopMatcher(("</s>",))
    assert matcher.feed("answer</") == ("answer", False)
    assert matcher.feed("s>more") == ("", True)


def test_stop_split_across_three_pieces():
    matcher = StopMatcher(("<|end|>",))
    assert matcher.feed("ok <|") == ("ok ", False)
    assert matcher.feed("en") == ("", False)
    assert matcher.feed("d|> junk") == ("", True)
    assert matcher.flush() == ""


def test_text_before_stop_in_final_piece_is_emitted():
    matcher = StopMatcher(("END",))
    assert matcher.feed("E") == ("", False)
    assert matcher.feed("xEN") == ("Ex", False)
    assert matcher.feed("D") == ("", True)


def test_longest_partial_prefix_is_held_back():
    matcher = StopMatcher(("abcd",))
    # "abc" is the longest suffix that starts the stop string: only "xy" is safe
    assert matcher.feed("xyabc") == ("xy", False)
    assert matcher.flush() == "abc"


def test_held_text_released_when_not_a_stop():
    matcher = StopMatcher(("abcd",))
    assert matcher.feed("xab") == ("x", False)
    assert matcher.feed("cz") == ("abcz", False)
    assert matcher.flush() == ""


def test_held_text_partly_released_when_new_prefix_starts():
    matcher = StopMatcher(("abc",))
    assert matcher.feed("ab") == ("", False)
    # "aba": "ab" was not the stop, but the final "a" may start one
    assert matcher.feed("a") == ("ab", False)
    assert matcher.feed("bc") == ("", True)


def test_only_partial_prefixes_are_held():
    matcher = StopMatcher(("abc",))
    assert matcher.feed("ca") == ("c", False)  # "a" held
    assert matcher.feed("x") == ("ax", False)
    assert matcher.feed("bc") == ("bc", False)  # "bc" does not start "abc"


def test_full_text_emitted_is_input_minus_stop():
    pieces = ["The an", "swer is 4", "2.\n", "\nUser:", " more"]
    emitted, stopped, rest = run(("\n\nUser:",), pieces)
    assert stopped
    assert "".join(emitted) == "The answer is 42."
    assert rest == ""


def test_several_stops_earliest_match_wins():
    matcher = StopMatcher(("world", "lo"))
    assert matcher.feed("hello world") == ("hel", True)


def test_several_stops_earliest_wins_regardless_of_order():
    assert StopMatcher(("c", "ab")).feed("xabc") == ("x", True)
    assert StopMatcher(("ab", "c")).feed("xabc") == ("x", True)


def test_several_stops_partial_then_other_completes():
    matcher = StopMatcher(("abcd", "c"))
    assert matcher.feed("ab") == ("", False)
    assert matcher.feed("c") == ("ab", True)


def test_several_stops_longest_partial_across_stops_is_held():
    matcher = StopMatcher(("abX", "bcd"))
    assert matcher.feed("ab") == ("", False)
    assert matcher.feed("c") == ("a", False)  # "bc" may still become "bcd"
    assert matcher.feed("d") == ("", True)


def test_flush_returns_held_text_once():
    matcher = StopMatcher(("###",))
    assert matcher.feed("total: 5 ##") == ("total: 5 ", False)
    assert matcher.flush() == "##"
    assert matcher.flush() == ""


def test_flush_with_nothing_held():
    matcher = StopMatcher(("stop",))
    assert matcher.feed("plain") == ("plain", False)
    assert matcher.flush() == ""


def test_no_stops_is_passthrough():
    matcher = StopMatcher(())
    for piece in ["a", "</s>", "", "stop"]:
        assert matcher.feed(piece) == (piece, False)
    assert matcher.flush() == ""


def test_empty_stop_strings_are_ignored():
    matcher = StopMatcher(("", ""))
    assert matcher.feed("anything") == ("anything", False)
    matcher = StopMatcher(("", "END"))
    assert matcher.feed("aEN") == ("a", False)
    assert matcher.feed("D") == ("", True)


def test_empty_piece_changes_nothing():
    matcher = StopMatcher(("xy",))
    assert matcher.feed("ax") == ("a", False)
    assert matcher.feed("") == ("", False)
    assert matcher.feed("y") == ("", True)


def test_overlapping_prefix_in_one_piece():
    assert StopMatcher(("aab",)).feed("aaab") == ("a", True)


@pytest.mark.parametrize("pieces", [["a", "a", "a", "b"], ["aa", "ab"], ["aaa", "b"], ["a", "aab"]])
def test_overlapping_prefix_across_pieces(pieces):
    emitted, stopped, rest = run(("aab",), pieces)
    assert stopped
    assert "".join(emitted) == "a"
    assert rest == ""


def test_overlapping_prefix_step_by_step():
    matcher = StopMatcher(("aab",))
    assert matcher.feed("a") == ("", False)
    assert matcher.feed("a") == ("", False)
    assert matcher.feed("a") == ("a", False)  # "aaa": keep "aa"
    assert matcher.feed("b") == ("", True)


def test_stop_in_multibyte_text():
    emitted, stopped, _ = run(("。終",), ["日本語。", "終わり"])
    assert stopped and "".join(emitted) == "日本語"


@pytest.mark.parametrize("text", ["hello world, this is fine", "ab ab abc aab", "xxENxENDxx", "no stop here"])
@pytest.mark.parametrize("stops", [("END",), ("aab", "b a"), ("zz",), ("ab", "abc", "c")])
def test_any_split_gives_same_result_as_whole_text(text, stops):
    """Emitted text is the prefix before the earliest stop, however the text is split into pieces."""
    positions = [i for i in (text.find(s) for s in stops) if i >= 0]
    expected = text[: min(positions)] if positions else text
    for size in (1, 2, 3, 5, len(text)):
        pieces = [text[i:i + size] for i in range(0, len(text), size)]
        emitted, stopped, rest = run(stops, pieces)
        assert stopped == bool(positions), (size, pieces)
        assert "".join(emitted) + ("" if stopped else rest) == expected, (size, pieces)


def test_the_stop_string_that_was_reached_is_remembered():
    matcher = StopMatcher(("END", "</x", "zz"))
    assert matcher.feed("a </") == ("a ", False) and matcher.matched is None
    assert matcher.feed("x> END") == ("", True)
    assert matcher.matched == "</x"
    later = StopMatcher(("bb", "ab"))
    assert later.feed("xab") == ("x", True) and later.matched == "ab"  # the earliest in the text wins
