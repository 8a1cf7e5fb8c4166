"""Bridge to the built-in ``_uro_port`` module of the embedding C program.

When running inside the port, ``_uro_port`` provides ``Atom`` (a str subclass the
C codec encodes as an Erlang atom), ``log(level, message)`` (sends
``{log, Level, Msg}``) and ``event(map)`` (sends ``{event, Ref, Map}`` for the call
that is running). Outside the port (pytest, the CLI) we provide stand-ins with the
same signatures so the rest of the package never has to care where it runs.
"""
import logging

try:  # pragma: no cover - only inside the C port
    from _uro_port import Atom, event, log  # type: ignore[import-not-found]

    EMBEDDED = True
    EVENTS: list = []
except ImportError:
    EMBEDDED = False

    class Atom(str):
        """Stand-in for the port's atom type: a plain str subclass."""

        __slots__ = ()

        def __repr__(self):
            return f"Atom({str.__repr__(self)})"

    _logger = logging.getLogger("uro_rec")
    _LEVELS = {
        "debug": logging.DEBUG,
        "info": logging.INFO,
        "notice": logging.INFO,
        "warning": logging.WARNING,
        "error": logging.ERROR,
        "critical": logging.CRITICAL,
    }

    def log(level, message):
        """Send one log line (the port version forwards to Erlang's logger)."""
        _logger.log(_LEVELS.get(str(level), logging.INFO), "%s", message)

    #: Events sent while not embedded, in order; tests read and clear it.
    EVENTS = []

    def event(d):
        """Record an event map (the port version sends it to the calling process)."""
        EVENTS.append(d)


def A(name):
    """Shorthand used for reply keys and symbolic values: ``A("ok")`` -> atom ok."""
    return Atom(name)
