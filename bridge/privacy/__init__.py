"""What is hidden of personal data and secrets wherever the bridge shows, logs or stores them (:mod:`.masking`).

Pure and on the lowest floor: every package may use it, and none of it does I/O.
"""
