"""Stage 3, training: the tracking-free core (fit_detector), its fine-tuning loop, loader and augmentations, and train
(the core plus a tracker).
"""
