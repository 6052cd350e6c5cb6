"""Early stopping on synthetic dev curves."""

from __future__ import annotations

import pytest

from pipeline.training.stopping import MAX_EPOCHS, PATIENCE, EarlyStopping


def run(curve: list[float], max_epochs: int, patience: int) -> tuple[EarlyStopping, int]:
    """Feed the curve until the rule stops; the number of epochs trained."""
    stop = EarlyStopping(max_epochs=max_epochs, patience=patience)
    for epoch, score in enumerate(curve, start=1):
        stop.update(epoch, score)
        if stop.stopped:
            return stop, epoch
    raise AssertionError("the curve ended before training stopped")


def test_stops_after_patience_and_keeps_the_best() -> None:
    # peaks at epoch 4, then two epochs without a better score
    stop, trained = run([0.4, 0.6, 0.7, 0.75, 0.74, 0.75, 0.9, 0.95], 10, 2)
    assert trained == 6  # epochs 7 and 8 are never run
    assert (stop.best_epoch, stop.best_score) == (4, 0.75)  # a tie is not an improvement
    assert stop.reason == PATIENCE
    assert "did not improve for 2 epochs after epoch 4" in stop.describe()


def test_stops_at_the_maximum_while_still_improving() -> None:
    stop, trained = run([0.1, 0.2, 0.3, 0.4, 0.5], 3, 2)
    assert trained == 3 and stop.best_epoch == 3
    assert stop.reason == MAX_EPOCHS and "maximum of 3 epochs" in stop.describe()


def test_patience_zero_trains_every_epoch_and_keeps_the_best() -> None:
    stop, trained = run([0.5, 0.9, 0.1, 0.2], 4, 0)
    assert trained == 4 and stop.best_epoch == 2 and stop.reason == MAX_EPOCHS


def test_a_single_epoch_reads_as_one() -> None:
    stop, _ = run([0.3], 1, 2)
    assert stop.describe() == "reached the maximum of 1 epoch"


def test_update_reports_improvement_and_refuses_after_stop() -> None:
    stop = EarlyStopping(max_epochs=2, patience=1)
    assert stop.update(1, 0.5) is True
    assert stop.update(2, 0.4) is False and stop.stopped
    with pytest.raises(RuntimeError, match="already stopped"):
        stop.update(3, 0.9)


@pytest.mark.parametrize(("epochs", "patience"), [(0, 2), (3, -1)])
def test_bad_settings_name_the_flag(epochs: int, patience: int) -> None:
    with pytest.raises(ValueError, match="--epochs|--patience"):
        EarlyStopping(max_epochs=epochs, patience=patience)
