"""The annotate job's flags and its --config file: every value passes the same checks,
whichever way it is given (no Ray here: parsing only)."""

from __future__ import annotations

import pytest

from jobs.annotate import parse_args


def _config(tmp_path, text: str) -> str:
    path = tmp_path / "job.yaml"
    path.write_text(text)
    return str(path)


def _error(capsys, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as exit_:
        parse_args(argv)
    assert exit_.value.code == 2
    return capsys.readouterr().err


def test_config_values_are_used_and_flags_override_them(tmp_path):
    path = _config(
        tmp_path,
        "input: /in\noutput: /out\nner-model: m\nmode: overwrite\nstride: 32\n"
        "no_normalize: true\ndtype: float32\n",
    )
    args = parse_args(["--config", path, "--stride", "64"])
    assert (args.input, args.output, args.ner_model, args.mode) == ("/in", "/out", "m", "overwrite")
    assert args.stride == 64 and args.no_normalize is True and args.dtype == "float32"


@pytest.mark.parametrize(
    ("line", "flag"),
    [
        ("mode: overwrit", "--mode"),
        ("aggregation: bogus", "--aggregation"),
        ("dtype: float8", "--dtype"),
        ("max_chars: -1", "--max-chars"),
        ("batch-tokens: 0", "--batch-tokens"),
        ("num_actors: -3", "--num-actors"),
        ("stride: -1", "--stride"),
        ("max-length: 0", "--max-length"),
    ],
)
def test_a_bad_value_in_the_config_is_refused_like_the_flag(tmp_path, capsys, line, flag):
    path = _config(tmp_path, f"input: /in\noutput: /out\n{line}\n")
    err = _error(capsys, ["--config", path])
    assert path in err and flag in err, err
    # the same value as a flag is refused too
    key, value = (x.strip() for x in line.split(":"))
    assert flag in _error(capsys, ["--input", "/in", "--output", "/o", flag, value])


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("- a\n- b\n", "must map flag names to values"),
        ("input: [unclosed\n", "not valid YAML (line"),
        ("inputs: /in\n", "unknown keys"),
        ("no-normalize: yes please\n", "must be true or false"),
    ],
)
def test_a_malformed_config_gets_a_clear_error(tmp_path, capsys, text, says):
    err = _error(capsys, ["--config", _config(tmp_path, text)])
    assert says in err and "Traceback" not in err


def test_a_missing_config_file_is_named(tmp_path, capsys):
    missing = str(tmp_path / "nope.yaml")
    err = _error(capsys, ["--config", missing])
    assert f"cannot read --config {missing}" in err


def test_help_names_each_default_once() -> None:
    from jobs.annotate import build_parser

    text = " ".join(build_parser().format_help().split())  # argparse wraps lines
    assert "(default: None)" not in text
    assert text.count("(default: the embedded sample corpus)") == 1
    assert "(default: doc_id)" in text  # a real default is still shown


def test_spans_and_no_context_reach_the_config() -> None:
    from jobs.annotate import to_config

    args = parse_args(["--input", "/in", "--output", "/out", "--spans", "s3://b/spans/"])
    cfg, _ = to_config(args)
    assert (cfg.spans_uri, cfg.context, cfg.ner, cfg.embed) == ("s3://b/spans/", True, None, None)
    cfg, _ = to_config(parse_args(["--input", "/in", "--output", "/o", "--ner-model", "m",
                                   "--no-context"]))  # fmt: skip
    assert cfg.context is False and cfg.spans_uri is None


def test_link_flags_become_the_link_config():
    from jobs.annotate import to_config

    args = parse_args(["--input", "/in", "--output", "/o", "--spans", "/s", "--embed-model", "e",
                       "--link-dictionary", "/d.parquet", "--link-top-k", "3",
                       "--link-min-score", "0.7"])  # fmt: skip
    cfg, _ = to_config(args)
    assert cfg.link is not None and cfg.link.source == "e"  # the embedding model by default
    assert (cfg.link_dictionary, cfg.link_top_k, cfg.link_min_score) == ("/d.parquet", 3, 0.7)
    args = parse_args(["--input", "/in", "--output", "/o", "--spans", "/s",
                       "--link-dictionary", "/d", "--link-model", "sap"])  # fmt: skip
    assert to_config(args)[0].link.source == "sap"
    no_link = to_config(parse_args(["--input", "/in", "--output", "/o", "--embed-model", "e"]))
    assert no_link[0].link is None


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--link-model", "m"], "--link-model needs --link-dictionary"),
        (["--link-dictionary", "/d"], "--link-dictionary needs --link-model"),
        (["--link-dictionary", "/d", "--link-model", "m", "--link-sparse-weight", "-1"],
         "--link-sparse-weight must be 0 or more"),
    ],
)  # fmt: skip
def test_link_flags_that_cannot_work_are_refused(extra, message):
    from jobs.annotate import to_config

    with pytest.raises(SystemExit, match=message):
        to_config(parse_args(["--input", "/in", "--output", "/o", "--spans", "/s", *extra]))
