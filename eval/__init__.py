"""The evaluation suite every model variant goes through."""
