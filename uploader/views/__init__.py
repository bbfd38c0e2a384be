"""Read-only models for the commands that look at a spool: ``status``, ``history`` (and its plot), the progress bar.

Nothing here takes a lock or writes: each is safe beside a running uploader.
"""
