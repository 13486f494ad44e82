"""Webhooks: an upload's callback_url is told when its analysis is final."""
