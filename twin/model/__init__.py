"""The twin's data model: graph schema, observations, site configuration."""
