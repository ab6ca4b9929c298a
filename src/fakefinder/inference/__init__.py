"""Stage 4, inference: the detector API (load_detector), face tracks, Grad-CAM heatmaps, and evaluate/predict."""
