"""Training configuration (placeholder until the training loop lands)."""

from pydantic import BaseModel, ConfigDict


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="allow")
