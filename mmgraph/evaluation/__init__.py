"""The comparison protocol as library code, behind :func:`compare`.

* :mod:`~mmgraph.evaluation.methods`: the method registry (a name means one model everywhere);
* :mod:`~mmgraph.evaluation.protocol`: the ``quick`` / ``full`` presets (budget, seeds, splits, per-data-set
  settings);
* :mod:`~mmgraph.evaluation.runner`: one run (train, select on validation, score the test part once) and many runs
  in worker processes;
* :mod:`~mmgraph.evaluation.robustness`: missing-modality and corruption sweeps;
* :mod:`~mmgraph.evaluation.scores`: what is measured per task (classification, regression, sentiment);
* :mod:`~mmgraph.evaluation.summary`, :mod:`~mmgraph.evaluation.report`, :mod:`~mmgraph.evaluation.plots`: the
  ranked tables, markdown, strictly valid JSON and PNG plots.
"""

from mmgraph.evaluation.compare import Comparison, compare
from mmgraph.evaluation.methods import Method, available_methods, default_methods, resolve_method
from mmgraph.evaluation.protocol import PROTOCOLS, Budget, Protocol, make_protocol

__all__ = ["PROTOCOLS", "Budget", "Comparison", "Method", "Protocol", "available_methods", "compare",
           "default_methods", "make_protocol", "resolve_method"]
