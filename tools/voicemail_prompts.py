#!/usr/bin/env python3
"""
Make the default prompts of the voicemail and IVR plugins: each text of PROMPTS spoken by
espeak-ng and converted by sox to an 8 kHz mono 16-bit WAV (what the RTP
endpoint plays), leading and trailing silence trimmed, in
``warden/features/prompts/``. The WAVs are committed; run this again after
changing a text:

    python3 tools/voicemail_prompts.py            # every prompt
    python3 tools/voicemail_prompts.py ivr-welcome  # only these

Needs ``espeak-ng`` and ``sox`` (Debian packages of the same names). The
output depends only on the texts and the versions of those two programs.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "warden" / "features" / "prompts"

PROMPTS = {
    "greeting": "The person you are calling is not available. "
    "Please leave a message after the tone, and press the pound key when you are done.",
    "mailbox-full": "Sorry, this mailbox is full. Goodbye.",
    "recorded": "Your message has been recorded. Goodbye.",
    "goodbye": "Goodbye.",
    "enter-mailbox": "Please enter the mailbox number, then press pound.",
    "enter-pin": "Please enter your PIN, then press pound.",
    "wrong-pin": "That PIN is not correct.",
    "locked": "This mailbox is locked after too many wrong PINs. Please try again later. Goodbye.",
    "no-pin": "This mailbox has no PIN yet. Goodbye.",
    "you-have": "You have",
    "new-messages": "new messages",
    "saved-messages": "saved messages",
    "main-menu": "Press 1 for new messages, 2 for saved messages, 3 to record your greeting, "
    "4 to change your PIN, or star to hang up.",
    "message-menu": "Press 1 to hear it again, 7 to delete it, 9 to save it, "
    "or 6 for the next message. Press star for the main menu.",
    "deleted": "Message deleted.",
    "saved": "Message saved.",
    "no-messages": "There are no messages.",
    "no-more": "No more messages.",
    "record-greeting": "Record your greeting after the tone, then press pound.",
    "greeting-saved": "Your greeting has been saved.",
    "new-pin": "Enter a new PIN of four to twelve digits, then press pound.",
    "pin-changed": "Your PIN has been changed.",
    "invalid": "That is not a valid choice.",
    "ivr-welcome": "Thank you for calling. Please enter the extension of the person "
    "you want to reach, or stay on the line.",
    **{
        str(d): w
        for d, w in enumerate(
            ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
        )
    },
}


def make(name: str, text: str, scratch: Path) -> None:
    """Speak ``text`` into ``OUT/<name>.wav``."""
    spoken = scratch / f"{name}.raw.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "160", "-w", str(spoken), text], check=True)
    subprocess.run(
        [
            "sox", str(spoken), "-r", "8000", "-c", "1", "-b", "16", "-e", "signed-integer",
            str(OUT / f"{name}.wav"), "silence", "1", "0.02", "0.5%", "reverse",
            "silence", "1", "0.02", "0.5%", "reverse",
        ],
        check=True,
    )  # fmt: skip


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        for name in sys.argv[1:] or PROMPTS:
            make(name, PROMPTS[name], Path(scratch))
    return 0


if __name__ == "__main__":
    sys.exit(main())
