"""The chat's command language: what people type, parsed and resolved against the
config, the room's defaults and the models, with no Matrix client and no database (an
import-linter contract keeps it so)."""
