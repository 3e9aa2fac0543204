"""
Per-extension call-feature settings (L{warden.interfaces.ICallFeatureStore}):
call forwarding and do-not-disturb, as the ``callfeatures`` plugin keeps them.
"""

from __future__ import annotations

import attrs

__all__ = ["CallFeatures"]


@attrs.frozen
class CallFeatures:
    """
    One extension's call features.

    Attributes:
        number: the extension number.
        forward_all: where every call to the extension goes ("" off).
        forward_busy: where a call goes when the extension is busy ("" off).
        forward_no_answer: where a call goes when the extension does not answer
            or is not registered ("" off).
        dnd: do-not-disturb: callers are refused as busy.
    """

    number: str
    forward_all: str = ""
    forward_busy: str = ""
    forward_no_answer: str = ""
    dnd: bool = False

    @property
    def is_default(self) -> bool:
        """Nothing is set: the extension behaves as without the feature."""
        return self == CallFeatures(self.number)
