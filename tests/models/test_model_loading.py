"""Loading a model in an actor: one warning line for weights left random, and none of
transformers' progress bars or load-report tables in the job log."""

from __future__ import annotations

import logging

from support import tiny_models as tm

from pipeline.models import loading as models


def test_weights_missing_from_the_checkpoint_are_one_warning(tmp_path, caplog, capfd) -> None:
    encoder = tm.write_random_encoder(tmp_path / "encoder")  # no token-classification head
    with caplog.at_level(logging.WARNING, logger="pipeline.models.loading"):
        models.load_model(encoder, "ner")
    warned = [r.getMessage() for r in caplog.records if r.name == "pipeline.models.loading"]
    assert len(warned) == 1 and "start random (classifier." in warned[0]
    out, err = capfd.readouterr()
    assert "LOAD REPORT" not in out + err and "Loading weights" not in out + err

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="pipeline.models.loading"):
        models.load_model(encoder, "embed")  # every weight is there
    assert not [r for r in caplog.records if r.name == "pipeline.models.loading"]
