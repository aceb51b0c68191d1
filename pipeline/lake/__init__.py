"""The Parquet lake (being split into modules: see ledger.py)."""

from pipeline.lake.ledger import *  # noqa: F403
from pipeline.lake.ledger import _ID_CHUNK, os  # noqa: F401  (tests patch these until they import the modules)
