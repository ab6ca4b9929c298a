"""Run tracking and what is read back from it: trackers, the run list, the HTML reports and their plots."""
