"""Run:AI client libraries. See :mod:`runai.reporter`."""
