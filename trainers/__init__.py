"""SFT, RFT, RL and Hint-Engineering data synthesis on TRL."""
