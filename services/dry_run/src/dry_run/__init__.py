"""The outreach micro-agent's dry-run Lambda."""
