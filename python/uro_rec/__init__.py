"""uro_rec: the Python half of uro_recommender.

The C port program (c_src/) embeds CPython, puts python/ on sys.path and calls the
functions of :mod:`uro_rec.commands` with decoded Erlang terms. Everything that
touches LibRecommender lives in this package; the C side only converts terms.

Importing this package is cheap on purpose: libreco (and with it TensorFlow, which
takes seconds to import) is only imported by the modules that need it, the first
time a command needs it.
"""

__all__ = ["commands"]
