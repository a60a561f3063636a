"""Numeric settings from the environment: one checker, messages that say what to set."""

import pytest

from persona_video.errors import InputError
from persona_video.settings import env_number


def test_defaults_values_and_kinds():
    assert env_number("X_MB", 512, example="512", env={}) == 512.0
    assert env_number("X_MB", 512, example="512", env={"X_MB": " 1.5 "}) == 1.5
    assert env_number("X_N", 4, example="4", whole=True, env={"X_N": ""}) == 4
    assert isinstance(env_number("X_N", 4, example="4", whole=True, env={"X_N": "7"}), int)


@pytest.mark.parametrize(
    ("value", "options", "message"),
    [
        ("lots", {}, "X = 'lots' is not a number: set it to e.g. 9"),
        ("2.5", {"whole": True}, "X = '2.5' is not a whole number: set it to e.g. 9"),
        ("nan", {}, "X = 'nan' is not a finite number"),
        ("-1", {"minimum": 0}, "X = -1 must be 0 or more: set it to e.g. 9"),
        ("0", {"positive": True}, "X = 0 must be more than 0"),
    ],
)
def test_a_bad_value_names_the_setting_and_what_to_set(value, options, message):
    with pytest.raises(ValueError) as caught:
        env_number("X", 9, example="9", env={"X": value}, **options)
    assert str(caught.value).startswith(message)


def test_request_settings_raise_the_projects_input_error():
    with pytest.raises(InputError, match="X = 'soon' is not a number"):
        env_number("X", 30, example="30", env={"X": "soon"}, error=InputError)
