"""Fakes shipped with gputopo: a drop-in `pynvml` driven by machine profiles, and a fake sysfs."""
