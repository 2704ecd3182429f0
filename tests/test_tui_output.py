"""The dashboard's output model: the terminal-like line buffer and the transcript."""

from __future__ import annotations

import asyncio

import pytest
from textual.app import App, ComposeResult

from alps.tui.line_buffer import MAX_ESCAPE_CHARS, LineBuffer
from alps.tui.output_view import OutputView
from alps.tui.transcript import NOTE, OutputLine, Transcript

# LineBuffer ----------------------------------------------------------------------


def test_newline_finishes_lines() -> None:
    buffer = LineBuffer()
    assert buffer.feed("one\ntwo\nthr") == ["one", "two"]
    assert buffer.current == "thr"


def test_carriage_return_redraws_line() -> None:
    buffer = LineBuffer()
    assert buffer.feed("progress 10%\rprogress 50%\r") == []
    assert buffer.current == "progress 50%"
    assert buffer.feed("progress 100%\n") == ["progress 100%"]
    assert buffer.current == ""


def test_carriage_return_overwrites_in_place() -> None:
    # A terminal overwrites only the columns written; the rest stays.
    buffer = LineBuffer()
    buffer.feed("abcdef\rXY")
    assert buffer.current == "XYcdef"
    assert buffer.cursor == 2


def test_carriage_return_newline_pair() -> None:
    buffer = LineBuffer()
    assert buffer.feed("dos line\r\nnext\r\n") == ["dos line", "next"]


def test_carriage_return_split_across_chunks() -> None:
    buffer = LineBuffer()
    for chunk in ["10%", "\r", "2", "0%", "\r30", "%"]:
        assert buffer.feed(chunk) == []
    assert buffer.current == "30%"


def test_erase_to_end_of_line() -> None:
    buffer = LineBuffer()
    buffer.feed("downloading file.tar\r\x1b[Kdone")
    assert buffer.current == "done"


def test_erase_whole_line_keeps_cursor() -> None:
    buffer = LineBuffer()
    buffer.feed("abcdef\x1b[2Kxy")
    assert buffer.current == "      xy"


def test_cursor_movement_sequences() -> None:
    buffer = LineBuffer()
    # Back 3 to write X, to column 1 to write Y, forward 2 to write Z over X.
    buffer.feed("abcdef\x1b[3DX\x1b[1GY\x1b[2CZ")
    assert buffer.current == "YbcZef"


def test_colour_sequences_are_dropped() -> None:
    buffer = LineBuffer()
    assert buffer.feed("\x1b[1;31mred\x1b[0m plain\n") == ["red plain"]


def test_escape_sequence_split_across_chunks() -> None:
    buffer = LineBuffer()
    assert buffer.feed("a\x1b[3") == []
    assert buffer.feed("1mb\n") == ["ab"]


def test_title_sequence_is_dropped() -> None:
    buffer = LineBuffer()
    assert buffer.feed("x\x1b]0;window title\x07y\n") == ["xy"]


def test_control_characters_are_dropped() -> None:
    buffer = LineBuffer()
    assert buffer.feed("bell\x07 null\x00 c1\x9b\n") == ["bell null c1"]


def test_backspace_moves_cursor_left() -> None:
    buffer = LineBuffer()
    assert buffer.feed("abc\b\bX\n") == ["aXc"]


def test_tab_moves_to_next_stop() -> None:
    buffer = LineBuffer()
    assert buffer.feed("ab\tc\n") == ["ab      c"]


def test_long_line_wraps_at_max_chars() -> None:
    buffer = LineBuffer(max_chars=4)
    assert buffer.feed("abcdefghij") == ["abcd", "efgh"]
    assert buffer.current == "ij"


def test_unfinished_escape_is_bounded() -> None:
    # An escape that never ends must not hold back the text after it forever.
    buffer = LineBuffer()
    buffer.feed("\x1b]" + "x" * MAX_ESCAPE_CHARS)
    assert buffer.feed("\nvisible\n")[-1] == "visible"


# Transcript ---------------------------------------------------------------------


def test_transcript_keeps_arrival_order() -> None:
    transcript = Transcript()
    transcript.feed("stdout", b"a\n")
    transcript.feed("stderr", b"oops\n")
    transcript.feed("stdout", b"b\n")
    assert transcript.lines == [
        OutputLine("stdout", "a"),
        OutputLine("stderr", "oops"),
        OutputLine("stdout", "b"),
    ]


def test_transcript_streams_have_own_lines() -> None:
    transcript = Transcript()
    transcript.feed("stdout", b"half of ")
    transcript.feed("stderr", b"error\n")
    transcript.feed("stdout", b"a line\n")
    assert transcript.lines == [
        OutputLine("stderr", "error"),
        OutputLine("stdout", "half of a line"),
    ]


def test_transcript_shows_unfinished_lines_last() -> None:
    transcript = Transcript()
    transcript.feed("stdout", b"done\n50%\r60%")
    assert len(transcript) == 2
    assert transcript.line_at(1) == OutputLine("stdout", "60%")


def test_transcript_decodes_utf8_split_across_chunks() -> None:
    transcript = Transcript()
    data = "café ☕\n".encode()
    for byte in data:
        transcript.feed("stdout", bytes([byte]))
    assert transcript.lines == [OutputLine("stdout", "café ☕")]


def test_transcript_replaces_invalid_utf8() -> None:
    transcript = Transcript()
    transcript.feed("stdout", b"bad \xff byte\n")
    assert transcript.lines[0].text == "bad \ufffd byte"


def test_transcript_end_finishes_last_line() -> None:
    transcript = Transcript()
    transcript.feed("stdout", b"no newline at the end")
    transcript.end("stdout")
    transcript.note("end of output")
    assert transcript.lines == [
        OutputLine("stdout", "no newline at the end"),
        OutputLine(NOTE, "end of output"),
    ]


def test_transcript_drops_oldest_lines() -> None:
    transcript = Transcript(max_lines=3)
    transcript.feed("stdout", b"1\n2\n3\n4\n5\n")
    assert [line.text for line in transcript.lines] == ["3", "4", "5"]
    assert transcript.dropped == 2


def test_transcript_notice_of_skipped_bytes() -> None:
    transcript = Transcript()
    transcript.skip("stderr", 1000)
    transcript.feed("stderr", b"tail\n")
    assert len(transcript) == 2
    assert transcript.line_at(0) == OutputLine(
        NOTE, "Not shown: the first 1000 bytes of stderr."
    )
    assert transcript.line_at(1) == OutputLine("stderr", "tail")


def test_transcript_notice_of_dropped_lines() -> None:
    transcript = Transcript(max_lines=2)
    transcript.feed("stdout", b"1\n2\n3\n")
    assert transcript.line_at(0).text == "Not shown: the first 1 line."
    transcript.skip("stdout", 10)
    assert transcript.line_at(0).text == (
        "Not shown: the first 10 bytes of stdout, then 1 line."
    )


# OutputView ---------------------------------------------------------------------


class ViewApp(App[None]):
    def compose(self) -> ComposeResult:
        yield OutputView()


def rendered_styles(view: OutputView, y: int) -> set[object]:
    """Return the foreground colours of the characters on screen line ``y``."""
    strip = view.render_line(y)
    return {
        segment.style.color
        for segment in strip
        if segment.text.strip() and segment.style
    }


def test_view_styles_stderr_apart() -> None:
    async def scenario() -> None:
        app = ViewApp()
        async with app.run_test(size=(40, 10)) as pilot:
            view = app.query_one(OutputView)
            view.feed("stdout", b"regular\n")
            view.feed("stderr", b"failure\n")
            await pilot.pause()
            stdout_colours = rendered_styles(view, 0)
            stderr_colours = rendered_styles(view, 1)
            expected = view.get_component_rich_style("output-view--stderr").color
            assert view.line_text(1) == "failure"
            assert stderr_colours == {expected}
            assert stdout_colours.isdisjoint(stderr_colours)

    asyncio.run(scenario())


@pytest.mark.parametrize("lines", [3, 50])
def test_view_follows_end_of_output(lines: int) -> None:
    async def scenario() -> None:
        app = ViewApp()
        async with app.run_test(size=(40, 10)) as pilot:
            view = app.query_one(OutputView)
            view.feed("stdout", "".join(f"line {n}\n" for n in range(lines)).encode())
            await pilot.pause()
            assert view.is_vertical_scroll_end
            last_row = min(lines, view.size.height) - 1
            assert view.render_line(last_row).text.rstrip() == f"line {lines - 1}"

    asyncio.run(scenario())
