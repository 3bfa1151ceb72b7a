"""Named presets: each is a delta over the defaults of ``fer.config.RunConfig``."""

PRESETS: dict[str, dict] = {
    "tiny": {},
    "rtx3050": {},
    "full": {},
}
