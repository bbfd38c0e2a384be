"""What every uploader process needs of its host, whatever it delivers: signals, wakeups, limits, logging.

The bottom layer of :mod:`uploader`: standard library and :mod:`runai.reporter`
only, so that any layer above (delivery, the agent, recovery, the commands) may
use it without an import running sideways.
"""
