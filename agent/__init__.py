"""gputopo node agent: discovery, topology model, publishing, metrics."""
