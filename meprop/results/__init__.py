"""The results layer: one record format, its JSON-lines store, and the environment snapshot.

- :mod:`~meprop.results.stats`: the speedup's 95% interval (a seeded bootstrap of the ratio
  of medians) and the rule a headline figure obeys;
- :mod:`~meprop.results.schema`: the record types and case fields, the schema string,
  the derived numbers (speedup, ideal, efficiency, noisy), defined once;
- :mod:`~meprop.results.store`: :class:`ResultsWriter`, :func:`read_records` and
  :class:`ResultsError`, the one error for results input that cannot be used;
- :mod:`~meprop.results.env`: :func:`snapshot`, the environment stored with every run.

Used by the measurement engine (:mod:`meprop.bench`), the paper's experiments
(:mod:`meprop.paper`) and the report (:mod:`meprop.report`); imports none of them.
"""

from meprop.results.schema import SCHEMA
from meprop.results.store import RESULTS_FILENAME, ResultsError, ResultsWriter, read_records

__all__ = ["SCHEMA", "RESULTS_FILENAME", "ResultsError", "ResultsWriter", "read_records"]
