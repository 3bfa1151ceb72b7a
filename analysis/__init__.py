"""MLflow runs -> one tidy DataFrame -> statistics, tables, figures and report folders.

``load`` is the only module that reads MLflow; ``stats``, ``tables`` and ``figures`` are pure
functions of the unit frame; ``report``, ``search`` and ``paper`` write ``reports/`` folders;
``files`` holds the atomic writers.
"""
