"""Tuning as data: the tuning file (`keytrail.yaml`, `--tuning PATH`, KEYTRAIL_TUNING) and what it does to a run.

`model` is what a loaded file is (frozen objects), `spec` the file's shape, `loader` reads and validates a file
(every error names the file and line), `matching` judges findings against exceptions (pure), `apply` turns a
tuning into a tuned catalog, param overrides and excepted findings (pure). docs/tuning.md is the user's guide.
"""
