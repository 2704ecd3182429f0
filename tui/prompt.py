"""An input line that appears on demand, for a new job's command or a filter."""

from __future__ import annotations

from typing import ClassVar

from textual.binding import Binding, BindingType
from textual.message import Message
from textual.widgets import Input


class Prompt(Input):
    """An ``Input`` hidden until ``show``; Enter submits it and Escape cancels it."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]
    DEFAULT_CSS = """
    Prompt {
        display: none;
    }
    Prompt.-shown {
        display: block;
    }
    """

    class Cancelled(Message):
        """The user pressed Escape in the prompt."""

        def __init__(self, prompt: Prompt) -> None:
            super().__init__()
            self.prompt = prompt

        @property
        def control(self) -> Prompt:
            return self.prompt

    @property
    def is_shown(self) -> bool:
        return self.has_class("-shown")

    def show(self, value: str = "") -> None:
        """Show the prompt with ``value`` in it and give it the focus."""
        self.value = value
        self.cursor_position = len(value)
        self.add_class("-shown")
        self.focus()

    def hide(self) -> None:
        self.remove_class("-shown")

    def action_cancel(self) -> None:
        self.hide()
        self.post_message(self.Cancelled(self))
