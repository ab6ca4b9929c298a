"""Scale-out seams: executors that run per-video and per-shard work (locally or on Ray) and SQL claims that hand each
tuning configuration to exactly one worker.
"""
