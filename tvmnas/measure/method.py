"""The method tag of a latency row: which measurement protocol and which compile pipeline produced it.

A row of another method is kept in the database but never used: changing either (a new protocol, another layout or
fusion in the pipeline) makes `tvmnas profile` measure again.
"""

from tvmnas.measure.compile import PIPELINE_VERSION
from tvmnas.measure.protocol import PROTOCOL_VERSION

METHOD = f"protocol{PROTOCOL_VERSION}-pipeline{PIPELINE_VERSION}"
