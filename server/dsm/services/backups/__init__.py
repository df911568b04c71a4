"""Backups: the encrypted archive format, verify, diff, the backups folder, point in time.

Creating and restoring backups are jobs of the jobs engine; these modules are the parts that
stand alone (see docs/backups.md).
"""
