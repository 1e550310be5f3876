"""Shared code for medforge stages: params, data formats, chat/loss masks, models, outputs."""
