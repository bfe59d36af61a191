"""The regional sync hub: tablets enrol, then sync their charts with it (README.md, "The
regional hub")."""

from sync_hub.app import create_app
from sync_hub.settings import Settings

__all__ = ["Settings", "create_app"]
