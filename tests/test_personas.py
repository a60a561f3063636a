from pathlib import Path

import pytest

from persona_video.errors import InputError, NotFoundError
from persona_video.personas import list_personas, load_persona, load_persona_file

SHIPPED = Path(__file__).resolve().parent.parent / "personas"


def test_shipped_personas_carry_the_seed_numbers():
    mkbhd, ijustine = load_persona("mkbhd"), load_persona("ijustine")
    assert mkbhd.script.pause_range_s == (0.4, 0.5) and ijustine.script.pause_range_s == (0.2, 0.3)
    assert mkbhd.script.emphasis_words == (1, 2) and ijustine.script.emphasis_words == (2, 4)
    assert mkbhd.script.temperature == 0.6 and ijustine.script.temperature == 0.8
    assert mkbhd.speech.speed == 1.0 and ijustine.speech.speed == 1.05
    assert mkbhd.speech.voice == ijustine.speech.voice == "heart"
    assert ijustine.motion.head_amplitude > mkbhd.motion.head_amplitude
    assert [p.id for p in list_personas()] == ["ijustine", "mkbhd"]


def _write(tmp_path: Path, text: str, name: str = "custom") -> Path:
    path = tmp_path / f"{name}.toml"
    source = (SHIPPED / "mkbhd.toml").read_text(encoding="utf-8").replace('id = "mkbhd"', f'id = "{name}"')
    path.write_text(source + text, encoding="utf-8")
    return path


def test_a_new_persona_is_a_new_file(tmp_path):
    persona = load_persona_file(_write(tmp_path, ""))
    assert persona.id == "custom" and persona.governor_config().pause_gain == 0.70


@pytest.mark.parametrize(
    ("replace", "key"),
    [
        (("speed = 1.0", "speed = 3.0"), "speech.speed"),
        (("temperature = 0.6", "temperature = -1"), "script.temperature"),
        (("pause_range_s = [0.4, 0.5]", "pause_range_s = [0.5, 0.4]"), "script.pause_range_s"),
        (("blink_rate_per_min = 14", "blink_rate_per_min = 100"), "motion.blink_rate_per_min"),
        (("pause_gain = 0.70", "pause_gain = 9"), "pause_gain"),
    ],
)
def test_out_of_range_values_name_the_file_and_key(tmp_path, replace, key):
    path = _write(tmp_path, "")
    path.write_text(path.read_text(encoding="utf-8").replace(*replace), encoding="utf-8")
    with pytest.raises(InputError) as err:
        load_persona_file(path)
    assert str(path) in str(err.value) and key in str(err.value)


def test_unknown_keys_are_errors(tmp_path):
    path = _write(tmp_path, "")
    path.write_text(path.read_text(encoding="utf-8").replace("[motion]", "[motion]\nwobble = 2"), encoding="utf-8")
    with pytest.raises(InputError, match=r"unknown key 'motion.wobble'"):
        load_persona_file(path)
    path.write_text(path.read_text(encoding="utf-8").replace("wobble = 2", "") + "\ncolour = 'red'\n", encoding="utf-8")
    with pytest.raises(InputError, match="colour"):
        load_persona_file(path)


def test_unknown_persona_lists_the_known_ones():
    with pytest.raises(NotFoundError, match="ijustine, mkbhd"):
        load_persona("linus")
    with pytest.raises(NotFoundError):
        load_persona("../etc/passwd")
