"""What an agent's words mean, as text: read below the emulator and the replay gate, which both judge answers.

reading.py     words, content words, negations, facts; similarity and the changes that flip meaning (pure)
"""
