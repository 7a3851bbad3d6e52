"""Protocols: every shipped file is valid; bad files fail naming file, key and problem."""

import dataclasses
import json
import re
import tomllib
from pathlib import Path

import pytest

from tmstarget.cli.main import main
from tmstarget.errors import ProtocolError
from tmstarget.protocol import CleanParams, Protocol, QcParams, builtin_protocol_names, load_protocol

REQUIRED = {"rumination-dmpfc", "rest-dmpfc", "sgacc-dlpfc", "dmn-dlpfc", "5cm-rule", "beam-f3", "ba46"}


def test_shipped_protocols_load_with_the_published_parameters():
    assert REQUIRED <= set(builtin_protocol_names())
    rum = load_protocol("rumination-dmpfc")
    assert rum.states == ["rumination", "distraction"]
    assert rum.seed.to_dict() == {"subsystem": "core"} and rum.seed.sphere is None
    assert rum.search.region == "dmpfc"
    assert rum.target.picker == "peak" and rum.target.direction == "negative"
    assert rum.connectivity.contrast == ("rumination", "distraction")
    sg = load_protocol("sgacc-dlpfc")
    assert sg.seed.to_dict() == {"sphere": "sgacc"} and sg.target.picker == "cluster"
    assert sg.prescription.pulses_per_session == 1800 and sg.prescription.depth_adjusted is True
    # every shipped protocol says how to stimulate (science.md section 7), even if only the course is known
    for name in builtin_protocol_names():
        assert load_protocol(name).prescription.pattern, name
    assert load_protocol("beam-f3").kind == "fixed"
    assert load_protocol("rest-dmpfc").states == ["rest"]


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_to_dict_round_trips_the_toml(name):
    """Every key of the file comes back unchanged, defaults fill the rest, and from_dict rebuilds the protocol."""
    p = load_protocol(name)
    raw = tomllib.loads(p.toml_text)
    params = p.to_dict()["parameters"]
    for section, values in raw.items():
        if isinstance(values, dict):
            assert params[section] == {**params[section], **values}
            assert list(params[section])[:len(values)] == list(values)  # the file's keys first, as recorded
        else:
            assert getattr(p, section) == values
    assert params["qc"] == QcParams().to_dict()
    again = Protocol.from_dict({"name": p.name, "description": p.description, "kind": p.kind, **params},
                               p.source, sha256=p.sha256, toml_text=p.toml_text)
    assert again == p and json.dumps(again.to_dict()) == json.dumps(p.to_dict())


def test_protocol_and_sections_are_frozen():
    p = load_protocol("rumination-dmpfc")
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.clean.smoothing_fwhm_mm = 4.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.clean = CleanParams()
    assert p.clean.smoothing_fwhm_mm == 6.0 and isinstance(p.clean.high_pass_hz, float)


def _write(tmp_path, text):
    path = tmp_path / "mine.toml"
    path.write_text(text)
    return path


BASE = ('name = "mine"\ndescription = "d"\n[seed]\nsubsystem = "core"\n[search]\nregion = "dmpfc"\n'
        '[connectivity]\nstate = "rest"\n')


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
        ("[clean]\nmin_volumes = 2.5\n", "clean.min_volumes", "must be an integer"),
        ("[clean]\nmotion = 6\n", "clean.motion", "must be a string"),
        ("[clean]\nlow_pass_hz = 30\n", "clean.low_pass_hz", "must be <= 10.0"),
        ("[rois]\nset = \"dixon25\"\n", "rois.set", "unknown name 'dixon25'"),
        ("[target]\ncluster_fraction = 0\n", "target.cluster_fraction", "must be > 0.0"),
        ("[coil]\nhandle = \"left\"\n", "coil.handle", "must be one of"),
        ("[prescription]\nsessions = 0\n", "prescription.sessions", "must be >= 1"),
        ("[prescription]\ndepth_adjusted = \"yes\"\n", "prescription.depth_adjusted", "true/false"),
        ("[qc]\nsplit_half_warning_mm = -1\n", "qc.split_half_warning_mm", "must be >= 0.0"),
        ("[qc]\nmean_fd_warnng_mm = 1\n", "mean_fd_warnng_mm", "did you mean 'mean_fd_warning_mm'"),
        ("[qc]\nrumination_subsystem_check = 1\n", "qc.rumination_subsystem_check", "true/false"),
        ("[clean]\ndummy_volumes = 5\n[qcc]\n", "qcc", "did you mean 'qc'"),
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


@pytest.mark.parametrize(
    "text, key, words",
    [
        ('description = "d"\n', "name", "required key is missing"),
        ('kind = "seed"\n' + BASE, "kind", "must be one of 'connectivity', 'fixed'"),
        ('clean = 3\n' + BASE, "clean", "[clean] must be a table"),
        ('nme = "x"\n' + BASE, "nme", "unknown key 'nme' in the top level; did you mean 'name'?"),
        (BASE.replace('state = "rest"', 'state = "rest"\nhrf_delay_s = 30'), "connectivity.hrf_delay_s",
         "must be <= 20.0"),
        ('name = "f"\ndescription = "d"\nkind = "fixed"\n', "fixed", "exactly one of [fixed] site or mni_mm"),
        ('name = "f"\ndescription = "d"\nkind = "fixed"\n[fixed]\nmni_mm = [1, 2]\n', "fixed.mni_mm",
         "must be 3 numbers"),
        (BASE.replace('region = "dmpfc"', ""), "search.region", "needs [search] region"),
        (BASE.replace('state = "rest"', 'contrast = ["rest", "rest"]'), "connectivity.contrast",
         "must name two different states"),
        (BASE.replace('state = "rest"', 'state = "rest"\ncontrast = ["a", "b"]'), "connectivity",
         "exactly one of [connectivity] state"),
        (BASE.replace('state = "rest"', 'contrast = [["a"], "b"]'), "connectivity.contrast", "list items"),
    ],
)
def test_missing_and_inconsistent_keys_are_named(tmp_path, text, key, words):
    path = _write(tmp_path, text)
    with pytest.raises(ProtocolError) as info:
        load_protocol(path)
    assert str(path) in str(info.value) and key in str(info.value) and words in str(info.value)


def test_fixed_protocol_with_an_mni_point():
    p = Protocol.from_dict({"name": "f", "description": "d", "kind": "fixed", "fixed": {"mni_mm": [-41, 16, 54]}})
    assert p.fixed.mni_mm == (-41, 16, 54) and p.states == []
    assert p.to_dict()["parameters"]["fixed"] == {"mni_mm": [-41, 16, 54]}


def test_protocol_needs_exactly_one_seed(tmp_path):
    path = _write(tmp_path, BASE.replace('subsystem = "core"', 'subsystem = "core"\nsphere = "sgacc"'))
    with pytest.raises(ProtocolError, match=r"exactly one of \[seed\]"):
        load_protocol(path)


def test_unknown_protocol_name_suggests_the_close_one():
    with pytest.raises(ProtocolError, match="Did you mean 'sgacc-dlpfc'"):
        load_protocol("sgacc-dlpf")


def test_overrides_are_validated_and_recorded():
    p = load_protocol("sgacc-dlpfc", ["clean.fd_threshold_mm=0.3", "target.picker=peak"])
    assert p.clean.fd_threshold_mm == 0.3 and p.target.picker == "peak"
    assert p.to_dict()["overrides"] == {"clean.fd_threshold_mm": 0.3, "target.picker": "peak"}
    with pytest.raises(ProtocolError, match="clean.fd_threshold_mm"):
        load_protocol("sgacc-dlpfc", ["clean.fd_threshold_mm=-1"])
    as_mapping = load_protocol("sgacc-dlpfc", {"clean.fd_threshold_mm": 0.3, "target.picker": "peak"})
    assert as_mapping == p and as_mapping.to_dict() == p.to_dict()
    q = load_protocol("rumination-dmpfc", {"qc.split_half_warning_mm": 2, "clean.smoothing_fwhm_mm": 4})
    assert q.qc.split_half_warning_mm == 2.0 and q.clean.smoothing_fwhm_mm == 4.0
    assert q.to_dict()["overrides"] == {"qc.split_half_warning_mm": 2, "clean.smoothing_fwhm_mm": 4}


@pytest.mark.parametrize(
    "overrides, words",
    [
        (["clean.fd_threshold_mm"], "--set clean.fd_threshold_mm: must look like section.key=value"),
        (["fd_threshold_mm=0.3"], "--set fd_threshold_mm=0.3: the key must be section.key"),
        ({"clean.fd.threshold_mm": 0.3}, "override 'clean.fd.threshold_mm': the key must be section.key"),
        (["cleaning.fd_threshold_mm=0.3"], "--set cleaning.fd_threshold_mm=0.3: unknown table [cleaning]; "
                                           "did you mean 'clean'?"),
        (["target.pickr=cluster"], "--set target.pickr=cluster: unknown key 'pickr' in [target]; "
                                   "did you mean 'picker'?"),
        ({"qc.mean_fd_warning_mm": "high"}, "override 'qc.mean_fd_warning_mm': must be a number; got 'high'"),
        (["target.picker=centroid"], "--set target.picker=centroid: must be one of 'peak', 'cluster'"),
        (["clean.fd_threshold_mm=-1"], "--set clean.fd_threshold_mm=-1: must be > 0.0"),
        (["clean.high_pass_hz=0.2"], "--set clean.high_pass_hz=0.2: "),  # fine alone, not with the file's low pass
    ],
)
def test_bad_overrides_are_named_not_blamed_on_the_file(overrides, words):
    """Issue 14 item 12: the --set argument is named (with a did-you-mean), never the protocol file alone."""
    with pytest.raises(ProtocolError) as info:
        load_protocol("rumination-dmpfc", overrides)
    message = str(info.value)
    assert message.startswith(words), message
    assert message.count("rumination-dmpfc.toml") <= int("high_pass" in words)


def test_cli_names_the_set_argument(capsys, tmp_path):
    sample = Path(__file__).resolve().parents[1] / "sample_data"
    code = main(["plan", str(sample), "--participant", "01", "--set", "target.pickr=cluster",
                 "--output", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and err == ("tmstarget: error: --set target.pickr=cluster: unknown key 'pickr' in [target]; "
                                 "did you mean 'picker'? (allowed: candidate_spacing_mm, cluster_fraction, direction, "
                                 "n_candidates, picker, sphere_radius_mm)")


def test_protocol_names_are_case_insensitive_and_hinted():
    """Decision: shipped names are accepted in any case; a misspelt one in capitals still gets the hint."""
    assert load_protocol("SGACC-DLPFC") == load_protocol("sgacc-dlpfc")
    assert load_protocol("SGACC-DLPFC").source == "protocols/sgacc-dlpfc.toml"
    with pytest.raises(ProtocolError, match="Did you mean 'sgacc-dlpfc'"):
        load_protocol("SGACC-DLPF")


def test_cli_lists_every_protocol_with_a_description(capsys):
    assert main(["protocols"]) == 0
    out = capsys.readouterr().out.splitlines()
    listed = {line.split()[0]: line for line in out}
    assert REQUIRED <= set(listed)
    assert "sgACC" in listed["sgacc-dlpfc"] or "subgenual" in listed["sgacc-dlpfc"]


def test_readme_documents_the_qc_defaults():
    """The README's [qc] block is exactly the defaults the code applies."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = re.search(r"```toml\n(\[qc\]\n.*?)```", readme, re.S).group(1)
    assert tomllib.loads(block)["qc"] == QcParams().to_dict()
