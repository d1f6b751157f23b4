"""The Kafka side of gocluster: configuration, record codec, broker tooling and entry points."""
