"""Model configuration (placeholder until the model lands)."""

from pydantic import BaseModel, ConfigDict


class ModelConfig(BaseModel):
    model_config = ConfigDict(extra="allow")
