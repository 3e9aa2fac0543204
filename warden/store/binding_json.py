"""
Bindings as the JSON texts kept in Redis (L{warden.store.redis}): one object
per binding, its fields in declaration order, so any node reads what another
wrote; and L{BindingTexts}, which spares a node decoding texts it has decoded
or written already.
"""

from __future__ import annotations

import json
import operator

import attrs

from warden.model import Binding

__all__ = ["DECODED_AORS", "BindingTexts", "binding_from_json", "binding_json"]

_BINDING_FIELDS = tuple(f.name for f in attrs.fields(Binding))
_binding_values = operator.attrgetter(*_BINDING_FIELDS)
_encode_json = json.JSONEncoder(separators=(",", ":")).encode

# Decoded bindings kept for this many AORs at most (see BindingTexts): about
# 1.4 KB each for an AOR with one binding, so at most about 140 MB. Phones
# refresh in turn, so an AOR is seen again only after every other one was: with
# fewer places than AORs, none would be found (and a refresh would need a read
# before its write, IGuardedLocation).
DECODED_AORS = 100_000


def binding_json(binding: Binding) -> str:
    """A binding as a JSON object, its fields in declaration order."""
    return _encode_json(dict(zip(_BINDING_FIELDS, _binding_values(binding))))


def binding_from_json(text: str) -> Binding:
    """The binding a JSON object (as written by any node) describes."""
    return Binding(**json.loads(text))


class BindingTexts:
    """
    The bindings an AOR's hash held the last time this node read or wrote it,
    with their JSON texts. A REGISTER reads the bindings the previous one wrote
    and gets back the one it writes: decoding only texts that changed spares
    most of the JSON parsing. Texts decide: a binding is reused only when its
    text is exactly the one it was decoded from. At most C{limit} AORs are
    kept; the AOR seen longest ago goes first.
    """

    def __init__(self, limit: int = DECODED_AORS) -> None:
        self._limit = limit
        self._last: dict[str, tuple[list[str], list[Binding]]] = {}

    def decode(self, aor: str, texts: list[str], known: dict[str, Binding]) -> list[Binding]:
        """
        The bindings of ``texts`` (the AOR's hash values), decoding only the
        texts that are neither the last ones seen nor in ``known``.
        """
        last = self._last.pop(aor, None)
        if last is not None and last[0] == texts:
            bindings = last[1]
        else:
            if last is not None:
                known = {**dict(zip(last[0], last[1])), **known}
            bindings = [known.get(t) or binding_from_json(t) for t in texts]
        self._last[aor] = (texts, bindings)
        if len(self._last) > self._limit:
            del self._last[next(iter(self._last))]
        return bindings

    def last(self, aor: str) -> tuple[list[str], list[Binding]] | None:
        """The texts and bindings last seen for ``aor`` (None: none are kept)."""
        return self._last.get(aor)

    def forget(self, aor: str) -> None:
        """Drop what is kept for ``aor``."""
        self._last.pop(aor, None)
