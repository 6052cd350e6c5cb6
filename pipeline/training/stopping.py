"""When training stops: after ``patience`` epochs without a better dev score, or at the
maximum number of epochs (pure; the loop feeds it one score an epoch)."""

from __future__ import annotations

from dataclasses import dataclass

MAX_EPOCHS = "max_epochs"
PATIENCE = "patience"


@dataclass
class EarlyStopping:
    """Tracks the best epoch (ties keep the earlier one) and why training stopped."""

    max_epochs: int
    patience: int  # epochs without improvement that end training; 0 = never early
    best_epoch: int = 0
    best_score: float = float("-inf")
    last_epoch: int = 0
    reason: str | None = None  # MAX_EPOCHS or PATIENCE once stopped
    metric: str = "dev strict F1"  # what the score is, for describe()

    def __post_init__(self) -> None:
        if self.max_epochs < 1:
            raise ValueError(f"--epochs must be at least 1, got {self.max_epochs}")
        if self.patience < 0:
            raise ValueError(f"--patience must be 0 or more, got {self.patience}")

    def update(self, epoch: int, score: float) -> bool:
        """Record ``epoch``'s dev score; whether it is the best so far."""
        if self.reason is not None:
            raise RuntimeError(f"training already stopped ({self.reason})")
        self.last_epoch = epoch
        improved = score > self.best_score
        if improved:
            self.best_epoch, self.best_score = epoch, score
        if epoch >= self.max_epochs:
            self.reason = MAX_EPOCHS
        elif self.patience and epoch - self.best_epoch >= self.patience:
            self.reason = PATIENCE
        return improved

    @property
    def stopped(self) -> bool:
        return self.reason is not None

    def describe(self) -> str:
        """Why training stopped, for training.json and the log."""
        if self.reason == PATIENCE:
            return (
                f"{self.metric} did not improve for {self.patience} epochs after epoch "
                f"{self.best_epoch}"
            )
        if self.reason == MAX_EPOCHS:
            unit = "epoch" if self.max_epochs == 1 else "epochs"
            return f"reached the maximum of {self.max_epochs} {unit}"
        return "not stopped"
