"""Stage 1, data: a labelled collection is discovered, its frames sampled, faces found and cropped, and the crops
recorded in a manifest that is split by video and source.
"""
