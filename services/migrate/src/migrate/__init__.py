"""Forward-only SQL migrations for the micro-agent: a CLI and a Lambda handler."""
