"""Helpers shared by the tests: messages, SMTP sinks, signature servers, the event database."""
