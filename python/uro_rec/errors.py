"""Errors that the C side turns into ``{error, {Kind, Detail}}``.

Any exception that is not a :class:`PortError` becomes
``{error, {python, #{type, message, traceback}}}`` on the Erlang side, which is
meant for bugs only: every mistake a caller can make must surface as one of these.
"""


class PortError(Exception):
    """Base class: ``kind`` is the error atom's name, ``detail`` any encodable value."""

    kind = "internal"

    def __init__(self, detail, kind=None):
        super().__init__(detail)
        if kind is not None:
            self.kind = kind
        self.detail = detail


class BadArg(PortError):
    """A caller passed a value of the wrong shape or type; the message names the field."""

    kind = "badarg"

    def __init__(self, message):
        super().__init__(str(message))


class UnknownModel(PortError):
    """No model of that name is loaded (or stored, for ``load``); detail is the name."""

    kind = "unknown_model"

    def __init__(self, name):
        super().__init__(str(name))


class Unsupported(PortError):
    """A valid request this service cannot do (e.g. a DGL or feature-only algorithm)."""

    kind = "unsupported"

    def __init__(self, message):
        super().__init__(str(message))


def internal(message):
    """An error on our side that is worth a clean report rather than a traceback."""
    return PortError(str(message), kind="internal")
