"""The outreach micro-agent's webhook Lambda: the agent hears back from Meta and SES."""
