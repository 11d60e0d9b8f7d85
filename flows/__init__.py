"""Conversation logic: pure, no HTTP and no SQL."""
