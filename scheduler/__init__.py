"""gputopo central scheduler."""
