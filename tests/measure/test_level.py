"""Compilation level names: the formatter and its parser are inverses, and a malformed name is one clear error."""

import pytest

from tvmnas.errors import TvmnasError
from tvmnas.measure.level import level_name, parse_level


@pytest.mark.parametrize("trials", [0, 1, 8, 64])
def test_parse_level_inverts_level_name(trials):
    assert parse_level(level_name(trials)) == trials


@pytest.mark.parametrize("name", ["tuned-0", "tuned-", "tuned-x", "tuned-08", "tuned--3", "tuned", "Default", "fast-8"])
def test_a_malformed_level_is_refused(name):
    with pytest.raises(TvmnasError, match="unknown compilation level"):
        parse_level(name)
