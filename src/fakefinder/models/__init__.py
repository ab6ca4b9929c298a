"""Stage 2, models: ImageNet bases, the classifier head, feature extraction, calibration and the model file with its
card.
"""
