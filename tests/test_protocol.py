"""Protocols: every shipped file is valid; bad files fail naming file, key and problem."""

import pytest

from tmstarget.cli.main import main
from tmstarget.errors import ProtocolError
from tmstarget.protocol import builtin_protocol_names, load_protocol

REQUIRED = {"rumination-dmpfc", "rest-dmpfc", "sgacc-dlpfc", "dmn-dlpfc", "5cm-rule", "beam-f3", "ba46"}


def test_shipped_protocols_load_with_the_published_parameters():
    assert REQUIRED <= set(builtin_protocol_names())
    rum = load_protocol("rumination-dmpfc")
    assert rum.states == ["rumination", "distraction"]
    assert rum["seed"] == {"subsystem": "core"}
    assert rum["search"]["region"] == "dmpfc"
    assert rum["target"]["picker"] == "peak" and rum["target"]["direction"] == "negative"
    sg = load_protocol("sgacc-dlpfc")
    assert sg["seed"] == {"sphere": "sgacc"} and sg["target"]["picker"] == "cluster"
    assert sg["prescription"]["pulses_per_session"] == 1800
    assert load_protocol("beam-f3").kind == "fixed"
    assert load_protocol("rest-dmpfc").states == ["rest"]


def _write(tmp_path, text):
    path = tmp_path / "mine.toml"
    path.write_text(text)
    return path


BASE = 'name = "mine"\ndescription = "d"\n[seed]\nsubsystem = "core"\n[search]\nregion = "dmpfc"\n[connectivity]\nstate = "rest"\n'


@pytest.mark.parametrize(
    "extra, key, words",
    [
        ("[clean]\nfd_treshold_mm = 0.3\n", "fd_treshold_mm", "did you mean 'fd_threshold_mm'"),
        ("[clean]\nsmoothing_fwhm_mm = \"six\"\n", "clean.smoothing_fwhm_mm", "must be a number"),
        ("[clean]\nhigh_pass_hz = 0.2\nlow_pass_hz = 0.1\n", "clean.high_pass_hz", "must be below low_pass_hz"),
        ("[target]\npicker = \"centroid\"\n", "target.picker", "must be one of"),
        ("[target]\nn_candidates = 0\n", "target.n_candidates", "must be >= 1"),
        ("[clean]\nscrub = 1\n", "clean.scrub", "true/false"),
        ("[search]\nregion = \"nowhere\"\n", None, "cannot be"),  # duplicate table -> TOML error
    ],
)
def test_invalid_protocol_names_file_key_and_problem(tmp_path, extra, key, words):
    path = _write(tmp_path, BASE + extra)
    with pytest.raises(ProtocolError) as info:
        load_protocol(path)
    message = str(info.value)
    assert str(path) in message
    if key:
        assert key in message and words in message
    else:
        assert "not valid TOML" in message


def test_protocol_needs_exactly_one_seed(tmp_path):
    path = _write(tmp_path, BASE.replace('subsystem = "core"', 'subsystem = "core"\nsphere = "sgacc"'))
    with pytest.raises(ProtocolError, match=r"exactly one of \[seed\]"):
        load_protocol(path)


def test_unknown_protocol_name_suggests_the_close_one():
    with pytest.raises(ProtocolError, match="Did you mean 'sgacc-dlpfc'"):
        load_protocol("sgacc-dlpf")


def test_overrides_are_validated_and_recorded():
    p = load_protocol("sgacc-dlpfc", ["clean.fd_threshold_mm=0.3", "target.picker=peak"])
    assert p["clean"]["fd_threshold_mm"] == 0.3 and p["target"]["picker"] == "peak"
    assert p.to_dict()["overrides"] == {"clean.fd_threshold_mm": 0.3, "target.picker": "peak"}
    with pytest.raises(ProtocolError, match="clean.fd_threshold_mm"):
        load_protocol("sgacc-dlpfc", ["clean.fd_threshold_mm=-1"])


def test_cli_lists_every_protocol_with_a_description(capsys):
    assert main(["protocols"]) == 0
    out = capsys.readouterr().out.splitlines()
    listed = {line.split()[0]: line for line in out}
    assert REQUIRED <= set(listed)
    assert "sgACC" in listed["sgacc-dlpfc"] or "subgenual" in listed["sgacc-dlpfc"]
