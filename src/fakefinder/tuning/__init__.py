"""Searches over training settings, shared by any number of workers through SQL claims."""
