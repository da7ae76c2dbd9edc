"""The results layer: one record format, its JSON-lines store, and the environment snapshot.

- :mod:`~meprop.lab.results.stats`: the speedup's 95% interval (a seeded bootstrap of the ratio
  of medians) and the rule a headline figure obeys;
- :mod:`~meprop.lab.results.schema`: the record types and case fields, the schema string,
  the derived numbers (speedup, ideal, efficiency, noisy), defined once;
- :mod:`~meprop.lab.results.store`: :class:`ResultsWriter`, :func:`read_records` and
  :class:`ResultsError`, the one error for results input that cannot be used;
- :mod:`~meprop.lab.results.env`: :func:`snapshot`, the environment stored with every run.

Used by the measurement engine (:mod:`meprop.lab.engine`), the paper's experiments
(:mod:`meprop.lab.paper`) and the report (:mod:`meprop.lab.report`); imports none of them.
"""

from meprop.lab.results.schema import SCHEMA
from meprop.lab.results.store import RESULTS_FILENAME, ResultsError, ResultsWriter, read_records

__all__ = ["SCHEMA", "RESULTS_FILENAME", "ResultsError", "ResultsWriter", "read_records"]
